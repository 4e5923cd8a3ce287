"""The labelling page `/label` (opt-in, RMSERVE_LABELLING): people order a task's responses, best first.

Server-rendered (Jinja escapes every text: prompts and responses come from a policy and are never markup),
with a little inline JavaScript for the keyboard and dragging; it saves through `POST /label/answers`.
A labeller is their API key (a digest of it, never the key) or, with no keys configured, the name they give.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Response, redirect, render_template, request, url_for
from pydantic import BaseModel, Field

from rmserve import metrics
from rmserve.errors import InvalidField, NotEnabled
from rmserve.http.middleware import LABEL_COOKIE, LABEL_LOGIN, key_matches, presented_key
from rmserve.http.openapi import Route, route
from rmserve.http.request import read_json
from rmserve.http.state import state
from rmserve.labels.agreement import agreement
from rmserve.labels.queue_metrics import publish
from rmserve.labels.store import LabelStore
from rmserve.protocols.schemas import Strict, parse

labelling = Blueprint("labelling", __name__, template_folder="templates")

MAX_NAME = 100
KEY_DIGEST_CHARS = 12  # tells keys apart in the store without keeping them
COOKIE_MAX_AGE_S = 12 * 3600


class LabelAnswer(Strict):
    task_id: int
    token: str = Field(description="the lease token the page was given with the task")
    order: list[int] | None = Field(description="positions as shown (0-based), best first; null skips the task")
    labeller: str | None = Field(None, description="the labeller's name, only when the server has no API keys")


class LabelSaved(BaseModel):
    saved: bool
    remaining: int = Field(description="tasks left for this labeller")


def _store() -> LabelStore:
    store = state().labels
    if store is None:
        raise NotEnabled("labelling is off (RMSERVE_LABELLING=false)")
    return store


def labeller(name: str | None) -> str:
    """Who is labelling: `key:<digest>` of the API key the request carries, or the name given when keys are off."""
    if state().api_keys:
        return "key:" + hashlib.sha256(presented_key().encode()).hexdigest()[:KEY_DIGEST_CHARS]
    if name is None or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise InvalidField("labeller", f"must be your name, 1 to {MAX_NAME} printable characters")
    return name.strip()


@route(
    labelling,
    Route(
        "/label",
        "get",
        "The labelling page (HTML): one task at a time, its responses to order best first.",
        errors=(401, 404, 422),
        plain_response="text/html",
        query=(("labeller", "your name, when the server has no API keys"),),
    ),
)
def label_page() -> Any:
    store = _store()
    name = request.args.get("labeller")
    keys_on = bool(state().api_keys)
    ask_name = not keys_on and not name
    who = None if ask_name else labeller(name)
    lease = None if who is None else store.lease(who)
    if lease is not None:
        publish(store)
    return render_template(
        "label.html",
        ask_name=ask_name,
        lease=lease,
        labeller_shown=who or "",
        labeller_sent="" if keys_on else (who or ""),
        remaining=0 if who is None else store.remaining(who),
        counts=store.counts(),
        agreement=agreement(store.orderings()),
        max_name=MAX_NAME,
    )


@route(
    labelling,
    Route(
        "/label/answers",
        "post",
        "Save the labeller's ordering of the task they hold, or their skip; 409 when the lease went to someone else.",
        request=LabelAnswer,
        response=LabelSaved,
        errors=(400, 401, 404, 409, 422),
    ),
)
def save_answer() -> Any:
    store = _store()
    answer = parse(LabelAnswer, read_json(state().settings)[0])
    who = labeller(answer.labeller)
    store.submit(answer.task_id, answer.token, who, answer.order)
    metrics.LABEL_ANSWERS.labels("skipped" if answer.order is None else "ordered").inc()
    publish(store)
    return LabelSaved(saved=True, remaining=store.remaining(who)).model_dump()


@route(
    labelling,
    Route(
        LABEL_LOGIN, "get", "The labelling page's sign-in form (HTML).", plain_response="text/html", authenticated=False
    ),
    endpoint="sign_in_form",
)
def sign_in_form() -> Any:
    return render_template("label_login.html", refused=False)


@route(
    labelling,
    Route(
        LABEL_LOGIN,
        "post",
        "Sign in to the labelling page with an API key (form field `key`): kept in a cookie for /label only.",
        plain_response="text/html",
        authenticated=False,
    ),
)
def sign_in() -> Any:
    key = request.form.get("key", "")
    if not state().api_keys:
        return redirect(url_for("labelling.label_page"), 303)
    if not key or not key_matches(key, state().api_keys):
        return Response(render_template("label_login.html", refused=True), status=401, mimetype="text/html")
    response = redirect(url_for("labelling.label_page"), 303)
    response.set_cookie(
        LABEL_COOKIE,
        key,
        max_age=COOKIE_MAX_AGE_S,
        path="/label",
        secure=request.is_secure,
        httponly=True,  # page scripts never read it
        samesite="Strict",  # another site's form cannot post answers as this labeller
    )
    return response
