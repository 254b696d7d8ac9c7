from rest_framework import renderers


class JSONRenderer(renderers.JSONRenderer):
    """DRF's JSON renderer, still answering when a text holds a lone surrogate.

    Refusals quote what was refused (an unknown field's name, a model reference), and a
    client may send a lone surrogate (``"\\ud800"``) that UTF-8 cannot encode. Such an
    answer is written with ASCII escapes instead, so the 400 stays a 400, not a 500.
    """

    def render(self, data, accepted_media_type=None, renderer_context=None):
        try:
            return super().render(data, accepted_media_type, renderer_context)
        except UnicodeEncodeError:
            escaped = type(self)()
            escaped.ensure_ascii = True
            return escaped.render(data, accepted_media_type, renderer_context)
