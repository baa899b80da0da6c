"""vmctl's demo WSGI app: GET / answers "Hello, World!"."""


def app(environ, start_response):
    if environ.get("PATH_INFO", "/") != "/":
        status, body = "404 Not Found", b"Not Found\n"
    elif environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        status, body = "405 Method Not Allowed", b"Method Not Allowed\n"
    else:
        status, body = "200 OK", b"Hello, World!\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []
