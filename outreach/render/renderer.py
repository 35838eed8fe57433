"""Render a message from `templates/<name>/<part>.<locale>.j2` in a sandbox.

One jinja2 sandboxed environment serves every part: autoescape is chosen by file name (on for
`*.html.*`, off for SMS, subject and text), undefined names raise instead of printing nothing,
and a value of None raises instead of printing "None". Context values are only ever data: no
borrower-supplied string is compiled as a template.

Every template file is read and compiled once, when the Renderer is built; renders only look
templates up. A file that does not compile is kept as a load error (lint reports it with its
line) so that one broken template cannot stop every other message from rendering.
"""

from __future__ import annotations

import hashlib
import re
import types
import unicodedata
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from jinja2 import (
    Environment,
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateSyntaxError,
    meta,
)
from jinja2.sandbox import ImmutableSandboxedEnvironment

from outreach.domain import Channel
from outreach.errors import RenderError
from outreach.render.filters import FILTERS
from outreach.render.segments import Encoding, sms_encoding_and_segments

SMS_PARTS: Final = ("sms",)
EMAIL_PARTS: Final = ("email.subject", "email.txt", "email.html")
PARTS_BY_CHANNEL: Final[dict[Channel, tuple[str, ...]]] = {
    Channel.SMS: SMS_PARTS,
    Channel.EMAIL: EMAIL_PARTS,
}

_MESSAGE_FILE: Final = re.compile(
    r"^(?P<part>sms|email\.subject|email\.txt|email\.html)"
    r"\.(?P<locale>[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*)\.j2$"
)
# Folder names a message may have; also what keeps a request for "../x" from reaching a file.
_TEMPLATE_NAME: Final = re.compile(r"^[a-z0-9][a-z0-9_]*$")
VERSION_LENGTH: Final = 12


class TemplateFailed(RenderError):
    """Raised when a template exists but cannot be rendered with the context it was given."""

    def __init__(self, detail: str, file: str | None = None, line: int | None = None) -> None:
        where = f"{file}:{line}" if file and line else file
        super().__init__(f"{where}: {detail}" if where else detail)
        self.detail = detail
        self.file = file
        self.line = line


@dataclass(frozen=True, slots=True)
class LoadError:
    file: str
    line: int | None
    message: str


@dataclass(frozen=True, slots=True)
class _Entry:
    names: dict[str, str]  # part -> loader name
    files: dict[str, str]  # part -> path shown in findings
    version: str


@dataclass(frozen=True, slots=True)
class Rendered:
    template: str
    version: str
    locale: str
    channel: Channel
    body: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    segments: int = 0
    encoding: Encoding | None = None
    # part ("sms", "email.txt", ...) -> the file it was rendered from, for findings
    files: Mapping[str, str] = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, with the parts of this channel only."""
        result: dict[str, Any] = {
            "template": self.template,
            "version": self.version,
            "locale": self.locale,
            "channel": str(self.channel),
        }
        if self.channel is Channel.SMS:
            result |= {"body": self.body, "segments": self.segments, "encoding": self.encoding}
        else:
            result |= {"subject": self.subject, "text": self.text, "html": self.html}
            result |= {"segments": 0, "encoding": None}
        return result


def _autoescape(name: str | None) -> bool:
    return name is not None and ".html." in name.rsplit("/", 1)[-1]


def _refuse_none(value: object) -> object:
    if value is None:
        raise TemplateFailed("a value printed by the template is None (missing data)")
    return value


class _CompiledLoader(FileSystemLoader):
    """Serves the templates the Renderer compiled at start, so extends/include never re-read."""

    def __init__(self, searchpath: Path) -> None:
        super().__init__(searchpath, encoding="utf-8")
        self.compiled: dict[str, Template] = {}

    def load(
        self,
        environment: Environment,
        name: str,
        globals: MutableMapping[str, Any] | None = None,
    ) -> Template:
        compiled = self.compiled.get(name)
        if compiled is not None:
            return compiled
        return super().load(environment, name, globals)


def build_environment(templates_dir: Path) -> ImmutableSandboxedEnvironment:
    # Immutable: a template can neither reach Python internals nor change the lists and dicts
    # of the context it was given.
    env = ImmutableSandboxedEnvironment(
        loader=_CompiledLoader(templates_dir),
        undefined=StrictUndefined,
        autoescape=_autoescape,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
        cache_size=-1,
        finalize=_refuse_none,
    )
    env.filters.update(FILTERS)
    return env


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def normalize_sms(text: str) -> str:
    """One paragraph: template lines joined, runs of spaces collapsed.

    Templates are written over several lines for review; an SMS pays for every character.
    Lines are joined with a space, except next to Chinese characters or full-width
    punctuation, where a space would be a typo.
    """
    result = ""
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line:
            continue
        if result and not (_is_wide(result[-1]) or _is_wide(line[0])):
            result += " "
        result += line
    return result


def normalize_subject(text: str) -> str:
    # A subject is one header line; a newline from data must never start a new header.
    return " ".join(text.split())


def normalize_text(text: str) -> str:
    lines = [line.rstrip() for line in text.strip("\n").splitlines()]
    collapsed: list[str] = []
    for line in lines:
        if line or (collapsed and collapsed[-1]):
            collapsed.append(line)
    return "\n".join(collapsed).strip() + "\n"


class Renderer:
    """Renders the messages found under one templates directory."""

    def __init__(self, templates_dir: Path | str) -> None:
        self.templates_dir = Path(templates_dir)
        if not self.templates_dir.is_dir():
            raise RenderError(f"templates directory {self.templates_dir} does not exist")
        self._env = build_environment(self.templates_dir)
        # (template, part, locale) -> loader name such as "visit_notice/sms.zh-TW.j2"
        self._message_files: dict[tuple[str, str, str], str] = {}
        self._compiled: dict[str, Template] = {}
        self._sources: dict[str, str] = {}
        self._references: dict[str, list[str]] = {}
        self.load_errors: list[LoadError] = []
        self._index()
        self._compile_all()
        self._template_names = frozenset(template for template, _, _ in self._message_files)
        # Everything a render needs, looked up once: (template, channel, locale) -> entry.
        self._entries: dict[tuple[str, Channel, str], _Entry] = {}
        for template, channel, locale in self.available():
            names = self.files_for(template, channel, locale)
            self._entries[(template, channel, locale)] = _Entry(
                names=names,
                files={part: self.display_path(name) for part, name in names.items()},
                version=self._version(template, channel, locale),
            )

    # -- discovery --------------------------------------------------------------------------

    def _index(self) -> None:
        for folder in sorted(self.templates_dir.iterdir()):
            if not folder.is_dir() or not _TEMPLATE_NAME.match(folder.name):
                continue
            for file in sorted(folder.iterdir()):
                match = _MESSAGE_FILE.match(file.name)
                if match:
                    key = (folder.name, match["part"], match["locale"])
                    self._message_files[key] = f"{folder.name}/{file.name}"

    def _compile_all(self) -> None:
        """Read, parse and compile every file once; note what each one extends or includes."""
        loader = self._env.loader
        assert isinstance(loader, _CompiledLoader)
        for path in sorted(self.templates_dir.rglob("*.j2")):
            name = path.relative_to(self.templates_dir).as_posix()
            try:
                source = path.read_text(encoding="utf-8")
                self._sources[name] = source
                tree = self._env.parse(source, name, str(path))
                self._references[name] = sorted(
                    ref for ref in meta.find_referenced_templates(tree) if ref
                )
                code = self._env.compile(tree, name, str(path))
                compiled = self._env.template_class.from_code(
                    self._env, code, self._env.make_globals(None), lambda: True
                )
            except TemplateSyntaxError as exc:
                message = exc.message or str(exc)
                self.load_errors.append(LoadError(self.display_path(name), exc.lineno, message))
            except (TemplateError, UnicodeDecodeError, OSError) as exc:
                self.load_errors.append(LoadError(self.display_path(name), None, str(exc)))
            else:
                self._compiled[name] = compiled
                loader.compiled[name] = compiled

    def display_path(self, name: str) -> str:
        """A loader name as a path under the templates directory the caller gave."""
        return (self.templates_dir / name).as_posix()

    def source_files(self) -> dict[str, str]:
        """Every template file read, loader name -> source text (layouts and partials too)."""
        return dict(self._sources)

    def templates(self) -> list[str]:
        return sorted(self._template_names)

    def locales(self, template: str | None = None) -> list[str]:
        return sorted(
            {locale for name, _, locale in self._message_files if template in (None, name)}
        )

    def available(self) -> Iterator[tuple[str, Channel, str]]:
        """Every (template, channel, locale) with all of its parts present."""
        for template in self.templates():
            for locale in self.locales(template):
                for channel in Channel:
                    if self.has(template, channel, locale):
                        yield template, channel, locale

    def has(self, template: str, channel: Channel | str, locale: str) -> bool:
        parts = PARTS_BY_CHANNEL[Channel(channel)]
        return all((template, part, locale) in self._message_files for part in parts)

    def has_part(self, template: str, part: str, locale: str) -> bool:
        return (template, part, locale) in self._message_files

    def expected_file(self, template: str, part: str, locale: str) -> str:
        return self.display_path(f"{template}/{part}.{locale}.j2")

    def files_for(self, template: str, channel: Channel | str, locale: str) -> dict[str, str]:
        """part -> loader name, for the parts that exist."""
        parts = PARTS_BY_CHANNEL[Channel(channel)]
        return {
            part: self._message_files[(template, part, locale)]
            for part in parts
            if (template, part, locale) in self._message_files
        }

    def dependencies(self, name: str) -> list[str]:
        """`name` and every layout, partial and macro file it extends, includes or imports."""
        seen: list[str] = []
        pending = [name]
        while pending:
            current = pending.pop()
            if current in seen or current not in self._sources:
                continue
            seen.append(current)
            pending.extend(self._references.get(current, ()))
        return seen

    def _version(self, template: str, channel: Channel, locale: str) -> str:
        digest = hashlib.sha256()
        names: set[str] = set()
        for name in self.files_for(template, channel, locale).values():
            names.update(self.dependencies(name))
        for name in sorted(names):
            digest.update(name.encode())
            digest.update(b"\0")
            digest.update(self._sources[name].encode())
            digest.update(b"\0")
        return digest.hexdigest()[:VERSION_LENGTH]

    def version(self, template: str, channel: Channel | str, locale: str) -> str:
        return self._entry(template, Channel(channel), locale).version

    # -- rendering --------------------------------------------------------------------------

    def _entry(self, template: str, channel: Channel, locale: str) -> _Entry:
        entry = self._entries.get((template, channel, locale))
        if entry is not None:
            return entry
        if template not in self._template_names:
            raise RenderError(f"unknown template {template!r} (in {self.templates_dir})")
        served = ", ".join(self.locales(template)) or "none"
        missing = [
            self.expected_file(template, part, locale)
            for part in PARTS_BY_CHANNEL[channel]
            if (template, part, locale) not in self._message_files
        ]
        raise RenderError(
            f"template {template!r} has no {channel} version in locale {locale!r} "
            f"(missing {', '.join(missing)}; locales present: {served})"
        )

    def render(
        self, template: str, channel: Channel | str, locale: str, context: Mapping[str, Any]
    ) -> Rendered:
        channel = Channel(channel)
        entry = self._entry(template, channel, locale)
        # The template is chosen by `locale`; the filters must format in that same language.
        values = {**context, "locale": locale}
        if channel is Channel.SMS:
            body = normalize_sms(self._render_file(entry.names["sms"], values))
            encoding, segments = sms_encoding_and_segments(body)
            return Rendered(
                template,
                entry.version,
                locale,
                channel,
                body=body,
                segments=segments,
                encoding=encoding,
                files=entry.files,
            )
        return Rendered(
            template,
            entry.version,
            locale,
            channel,
            subject=normalize_subject(self._render_file(entry.names["email.subject"], values)),
            text=normalize_text(self._render_file(entry.names["email.txt"], values)),
            html=self._render_file(entry.names["email.html"], values).strip() + "\n",
            files=entry.files,
        )

    def _render_file(self, name: str, values: Mapping[str, Any]) -> str:
        compiled = self._compiled.get(name)
        if compiled is None:
            problems = [e for e in self.load_errors if e.file == self.display_path(name)]
            detail = problems[0].message if problems else "not loaded"
            line = problems[0].line if problems else None
            raise TemplateFailed(f"does not compile: {detail}", self.display_path(name), line)
        try:
            return compiled.render(values)
        except TemplateFailed as exc:
            file, line = self._failure_location(exc, name)
            raise TemplateFailed(exc.detail, file, line) from exc
        except (
            TemplateError,
            ValueError,
            TypeError,
            KeyError,
            AttributeError,
            ArithmeticError,
        ) as exc:
            # UndefinedError and SecurityError are TemplateErrors; the filters raise ValueError.
            file, line = self._failure_location(exc, name)
            raise TemplateFailed(f"{type(exc).__name__}: {exc}", file, line) from exc

    def _failure_location(self, exc: BaseException, entry: str) -> tuple[str, int | None]:
        """The template file and line the failure happened on (jinja keeps them in tracebacks)."""
        found: tuple[str, int | None] = (self.display_path(entry), None)
        trace: types.TracebackType | None = exc.__traceback__
        root = self.templates_dir.resolve()
        while trace is not None:
            filename = trace.tb_frame.f_code.co_filename
            if filename.endswith(".j2"):
                path = Path(filename).resolve()
                if path.is_relative_to(root):
                    found = (self.display_path(path.relative_to(root).as_posix()), trace.tb_lineno)
            trace = trace.tb_next
        return found
