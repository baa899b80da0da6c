"""vmctl's demo WSGI app: GET / answers "Hello, World!".

With UPSTREAM set in its environment (the VM's app_env), it also fetches that URL and shows its
answer under its own: an app in front of another VM on a private network.
"""

import os


def upstream():
    url = os.environ.get("UPSTREAM")
    if not url:
        return b""
    import urllib.request  # only when asked: it costs ~0.2 s of CPU under TCG at start

    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            got = r.read(65536)
        return b"From %s:\n%s" % (url.encode(), got)
    except Exception as e:  # the page says what went wrong instead of failing
        return b"From %s: no answer (%s)\n" % (url.encode(), str(e).encode())


def app(environ, start_response):
    if environ.get("PATH_INFO", "/") != "/":
        status, body = "404 Not Found", b"Not Found\n"
    elif environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
        status, body = "405 Method Not Allowed", b"Method Not Allowed\n"
    else:
        status, body = "200 OK", b"Hello, World!\n" + upstream()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body] if environ.get("REQUEST_METHOD") != "HEAD" else []
