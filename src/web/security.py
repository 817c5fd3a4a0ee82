"""Response headers every answer gets: no caching of API data, the page's hardening, and CORS.

- Every `/api` and `/v1` response is `Cache-Control: no-store`: a shared cache or the browser's
  back button must never show one user's data to another. Only static assets are cacheable.
- The page and its files: `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`
  (its CSP, with `frame-ancestors 'none'`, is set where the page is served).
- CORS is off unless `cors.allowed_origins` names an origin; a named origin may call the API with
  a bearer credential. Cookies never cross origins (no `Allow-Credentials`), so the page's
  sign-in works only on the page itself.
"""

from __future__ import annotations

from flask import Flask, Response, request

from ..settings import CorsSettings

ALLOWED_HEADERS = "Authorization, Content-Type, X-API-Key, Last-Event-ID"
ALLOWED_METHODS = "GET, POST, PUT, PATCH, DELETE, OPTIONS"


def install(app: Flask, cors: CorsSettings) -> None:
    allowed = {o.rstrip("/") for o in cors.allowed_origins}

    @app.after_request
    def _headers(response: Response) -> Response:
        path = request.path
        if path.startswith(("/api/", "/v1/")) or path in ("/metrics",):
            response.headers["Cache-Control"] = "no-store"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        origin = request.headers.get("Origin")
        if origin and origin.rstrip("/") in allowed:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = "Retry-After, WWW-Authenticate"
            if request.method == "OPTIONS":
                response.headers["Access-Control-Allow-Methods"] = ALLOWED_METHODS
                response.headers["Access-Control-Allow-Headers"] = ALLOWED_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
        response.vary.add("Origin")
        return response
