"""Names of the facts the gateway's stages leave in the ASGI scope for later stages and user middleware."""

REQUEST_ID = "gateway.request_id"  # str: the X-Request-ID settled on by the request-id middleware
ROUTE = "gateway.route"  # str: the matched route's prefix
UPSTREAM = "gateway.upstream"  # str: the URL of the upstream instance picked for this request
CLIENT_IP = "gateway.client_ip"  # str: the client's address, resolved across trusted proxies
REASON = "gateway.reason"  # str: why the exchange did not go as asked (ip_filter, body_limit, client_closed...)
TIMINGS = "gateway.timings"  # dict[str, float]: loop times of upstream milestones, for the access log
EDGE_STATUS = "gateway.edge_status"  # int: the status the server protocol answered with itself (a body deadline)
CACHE = "gateway.cache"  # str: what the route cache did (hit, stale, revalidated, stale_if_error, miss)
UPSTREAM_DATE = (
    "gateway.upstream_date"  # bytes | None: the upstream's Date (the client gets the gateway's), for the cache
)
# Callable[[], None], set by the edge protocol (absent under other servers): the app calls it before sending a
# response that brings its own Date, so that the server leaves out its own.
OWN_DATE = "gateway.own_date"
# Callable[[Callable[[], None] | None], None], set by the edge protocol (absent under other servers): the app
# hands it a function to call as soon as the client's connection is lost during this exchange, or None to stop.
ON_CLIENT_GONE = "gateway.on_client_gone"
# True, set by the edge protocol on plain TCP connections whose app lets every message through (absent otherwise):
# the app may send the rest of a body as a gateway.edge.splice.SPLICE_MESSAGE.
SPLICE = "gateway.splice"
