"""The OpenAI Images API on the wire: ``protocol`` (the typed models), ``serving`` (a request resolved into an
``ImageRequest``, results into responses), ``images`` (the guarded decoder, the encoders), ``errors`` (status,
error body and headers), ``multipart`` (the edit form), ``sse`` (streamed events), ``headers`` (what ran, where
the time went) and ``openapi`` (the request bodies of the document).

No module here imports Ray or FastAPI: the wire format is built and tested without a Serve cluster or the app.
Starlette is imported only where a module speaks HTTP itself: ``errors``, ``multipart`` and ``sse``.
"""
