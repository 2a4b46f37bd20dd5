"""SMART on FHIR authorization server (SMART App Launch 2.x and Backend Services), built on authlib.

Modules, outside in: ``routes`` (FastAPI endpoints, ``mount_smart``), ``pages`` (login, picker, consent
HTML), ``server`` (authlib integration), ``grants``, ``endpoints`` (revocation, introspection),
``assertion`` (private_key_jwt), ``tokens``, ``codes`` (codes, launches, sessions), ``registry``
(clients, users), ``keys``, ``scopes``, ``discovery``, ``verify`` (access token → ``Grant`` for the FHIR
front door), ``cli`` (``calaim-gateway clients|users``). See docs/smart.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastapi import FastAPI

    from gateway.settings import Settings


def mount_smart(app: FastAPI, settings: Settings) -> None:
    """Register the authorization server's routes on ``app`` (the one hook gateway/web/app.py calls)."""
    from adapters.smart.routes import mount_smart as mount

    mount(app, settings)
