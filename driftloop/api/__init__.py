"""The control API: the FastAPI app, the loop's routes, tokens, audit, guard and its server."""
