"""`zipa serve`: a local web page for phoneticians.

Drop audio files (or record from the microphone) and see each file's spectrogram with its phone
and word tiers, phones shaded by confidence; click a phone or a word to hear it; zoom and scroll;
force-align a known transcript; download the TextGrid, CTM, JSON lines or TSV that `zipa align`
writes. Needs the web extra (``pip install 'zipa-phones[web]'``: starlette, uvicorn,
python-multipart).

    from zipa.web import create_app           # a Starlette app, e.g. for starlette.testclient
    app = create_app(transcriber, model_name="my.pth")

`zipa.web.jobs` holds the work (uploads, the one worker thread, the outputs), `zipa.web.app`
the HTTP side, `zipa.web.spectrogram` the picture, `zipa.web.server` the socket and uvicorn,
and ``static/`` the page itself.
"""

from zipa.web.app import create_app

__all__ = ["create_app"]
