"""Names of the facts the gateway's stages leave in the ASGI scope for later stages and user middleware."""

REQUEST_ID = "gateway.request_id"  # str: the X-Request-ID settled on by the request-id middleware
ROUTE = "gateway.route"  # str: the matched route's prefix
UPSTREAM = "gateway.upstream"  # str: the URL of the upstream instance picked for this request
