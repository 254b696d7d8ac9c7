"""The JSON error answers Django itself renders (the project's handler400/404/500)."""

from .exceptions import error_response


def bad_request(request, exception=None):
    return error_response("bad_request", "Bad request.", 400)


def not_found(request, exception=None):
    return error_response("not_found", "No such resource.", 404)


def server_error(request):
    return error_response("server_error", "Internal server error.", 500)
