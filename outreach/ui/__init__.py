"""The ops pages under /ui/ (SPEC §8): server-rendered HTML for people, on the app's own
routes, working without JavaScript.

Routes: `/` and `/ui` → `/ui/`; `GET`/`POST /ui/login`, `POST /ui/logout` (`login.py`); the
overview `/ui/` (`overview.py`); the log `/ui/messages`, its CSV `/ui/messages/export.csv`,
one message `/ui/messages/{id}` and its cancellation `GET`/`POST /ui/messages/{id}/cancel`
(`messages.py`); a borrower `/ui/borrowers/{id}` (`borrowers.py`); the campaigns
`/ui/campaigns`, the create form `/ui/campaigns/new` with its preview
`POST /ui/campaigns/preview` and `POST /ui/campaigns` (create), one campaign
`/ui/campaigns/{id}` and an admin's `POST /ui/campaigns/{id}/launch|pause|resume|cancel`
(cancel confirmed on `GET /ui/campaigns/{id}/cancel`) (`campaigns.py`, the form in
`campaign_form.py`); static files under `/ui/static/` (`static/`, shipped in the package).
Charts are SVG drawn on the server (`charts.py`), coloured by ui.css's `bar-<status>`.

Adding a page (campaigns, say):

- Write `outreach/ui/<name>.py` with `router = APIRouter(include_in_schema=False)` and add
  it to `ROUTERS` below.
- A page takes `session: PageSession` (`pages.py`): without a live session the answer is a
  303 to /ui/login (back to the page after logging in). A form post takes `FormSession` (the
  session, the form's CSRF token checked: 403 without it) or, for a write, `AdminForm` (also
  403 for a viewer, recorded in the audit log as `ui.post` / `forbidden`). Name the person
  in the audit log and the services with `actor_of(session)` / `session.actor`.
- Answer with `render(request, "<name>.html", {...})`: the template `{% extends
  "base.html" %}` and fills `{% block content %}`; set `page_title` and `nav` (`overview`,
  `messages`, `campaigns`: the tab shown as current) in the context. Every form posts
  `<input type="hidden" name="{{ csrf_field }}" value="{{ ui.csrf }}">` (or `{{
  forms.csrf() }}` from `_forms.html`); show write controls only `{% if ui.is_admin %}`.
  `_forms.html` also has labelled fields, `status_badge` and `time_pair` (UTC and the
  borrower's zone).
- Refuse with `raise PageError(status, "what to say")`: an HTML page with that status. After
  a successful post, `return see_other(url)` (303).
- Filters from `formats.py` are in every template: `utc`, `local(zone)`, `tone`,
  `reason_words`, `step_words(zone)` (a timeline step in plain words), `money(currency)`,
  `masked`, `share(whole)` (a percentage).

Every answer under /ui/ carries a Content-Security-Policy without inline script, nosniff,
no referrer, no framing and `no-store` (`api.headers`, as every answer of the app does);
jinja2 escapes everything.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles

from outreach.ui import borrowers, campaigns, login, messages, overview, pages

ROUTERS: tuple[APIRouter, ...] = (
    login.router,
    overview.router,
    messages.router,
    borrowers.router,
    campaigns.router,
)


def mount(app: FastAPI) -> None:
    """The pages on `app` (whose `state.services` is set): routes, static files, headers."""
    pages.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/ui/static", StaticFiles(packages=[("outreach.ui", "static")]), name="ui-static")
