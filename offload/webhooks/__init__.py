"""Incoming webhooks (Stripe, GitHub, Clerk) turned into exactly one run each.

``app.py`` the gateway (Starlette): ``providers.py`` checks signatures, ``writer.py`` commits to the
``inbox.py`` table before answering, ``launch.py`` makes the run at once; the ``webhook_inbox`` sensor
(``sensors/webhook_inbox.py``) launches whatever the gateway did not. ``event.py`` is the run config the
handler jobs receive. Run it with ``python -m offload.webhooks serve``.
"""
