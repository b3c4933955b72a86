"""The HTTP surface: the REST API, the HTML views, health and metrics, and what wraps every request
(API keys and sessions, browser security headers, the multipart parser). Only translation between
HTTP and the gateway facade lives here; the work happens in `web.pipeline` and below."""
