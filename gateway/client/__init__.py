"""The upstream side: the one shared httpx.AsyncClient and the gateway's HTTP/1.1 transport under it."""
