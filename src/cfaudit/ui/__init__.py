"""``cfaudit ui``: an interactive counterfactual editor in the browser.

``sources`` (checking an upload, reading a picked index row), ``controls`` (the intervention drop-downs and the
:class:`~cfaudit.data.interventions.Intervention` they make), ``session`` (the editor behind the page: cached
inversions, one edit per click, the zip download with its JSON record; no gradio) and ``app`` (the Gradio page
and starting it offline on 127.0.0.1).
"""
