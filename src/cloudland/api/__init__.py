"""The control-plane API: validation, admission, CRUD, apply and watch over HTTP.

`service.ResourceService` is the only writer of the store; the HTTP app in
`app.py` and the in-process controllers both go through it.
"""
