"""Admins of every role over the portal test app (tests/web/conftest.py: Chicago, frozen clock)."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app.core.clock import FrozenClock
from app.services import Services
from tests.web.admin.helpers import Admin, make_admin, sign_in


@pytest.fixture
def owner(svc: Services) -> Admin:
    return make_admin(svc, "owner@northwind.example", "owner")


@pytest.fixture
def finance(svc: Services) -> Admin:
    return make_admin(svc, "finance@northwind.example", "finance")


@pytest.fixture
def readonly(svc: Services) -> Admin:
    return make_admin(svc, "auditor@northwind.example", "readonly")


@pytest.fixture
def as_owner(app: Flask, svc: Services, owner: Admin, clock: FrozenClock) -> FlaskClient:
    return sign_in(app.test_client(), owner, clock)


@pytest.fixture
def as_finance(app: Flask, svc: Services, finance: Admin, clock: FrozenClock) -> FlaskClient:
    return sign_in(app.test_client(), finance, clock)


@pytest.fixture
def as_readonly(app: Flask, svc: Services, readonly: Admin, clock: FrozenClock) -> FlaskClient:
    return sign_in(app.test_client(), readonly, clock)
