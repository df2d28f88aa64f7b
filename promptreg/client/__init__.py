"""Remote mode: the typed registry API over HTTP (httpx), against ``promptreg server``.

Nothing here opens a database, a bucket or MLflow: the server holds those credentials; a client
holds a token (PROMPTREG_TOKEN, or ``promptreg login``).
"""
