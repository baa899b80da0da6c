"""A WSGI app as small as one gets: what vmctl's [app] serves (vm-configs/own-app.toml).

Deploy a change with `vmctl app deploy NAME`: gunicorn reloads with no failed request.
"""
import os


def app(environ, start_response):
    body = "Hello from your own app on %s\n" % os.uname().nodename
    start_response("200 OK", [("Content-Type", "text/plain; charset=utf-8")])
    return [body.encode()]
