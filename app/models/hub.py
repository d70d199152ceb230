"""`tandem models pull`: a Hugging Face Hub repository into the models folder. MLC repositories
are used as they are, safetensors checkpoints (Llama, Qwen2) are converted, a named GGUF file is
imported. The Hub API goes through huggingface_hub; file bodies through app.models.transfer so a
cut or cancelled download continues where it stopped, and every file is checked by its hash."""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.errors import AppError
from app.models.catalog import ModelSource, downloads_dir, gguf_store_dir
from app.models.gguf_import import import_gguf_as, importer
from app.models.install import check_free_space, commit, destination, staged
from app.models.naming import name_for_gguf, name_for_repo
from app.models.transfer import Expected, TransferError, download

MLC_INDEXES = ("tensor-cache.json", "ndarray-cache.json")
MLC_CONFIG = "mlc-chat-config.json"
CHECKPOINT_FILES = (
    "config.json", "generation_config.json", "model.safetensors.index.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
    "merges.txt", "tokenizer.model", "chat_template.jinja",
)  # fmt: skip
MLC_SKIPPED = ("*.md", ".gitattributes", "*.png", "*.jpg", "*.gif")
_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_QUANT_OUTPUT_SHARE = {"q4f16_1": 0.5, "q4f32_1": 0.5, "q0f16": 1.0, "q0f32": 2.0}
"""Converted size as a share of the checkpoint's, an upper bound for the free-disk check."""


class PullError(AppError):
    """The pull cannot go on; the message names the repository or file and the fix."""


class OfflineRefused(PullError):
    """Offline privacy mode or HF_HUB_OFFLINE forbids reaching the Hub."""


@dataclass(frozen=True)
class PullSpec:
    repo: str
    revision: str | None = None
    filename: str | None = None

    def __str__(self) -> str:
        text = self.repo + (f"@{self.revision}" if self.revision else "")
        return text + (f":{self.filename}" if self.filename else "")


@dataclass(frozen=True)
class RemoteFile:
    name: str
    expected: Expected


@dataclass(frozen=True)
class RepoPlan:
    spec: PullSpec
    commit: str
    kind: str
    """"mlc", "safetensors" or "gguf"."""
    files: tuple[RemoteFile, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.expected.size or 0 for f in self.files)


@dataclass
class PullReporter:
    """How a pull reports progress: bytes for the download bar, stages for the rest."""

    on_start: Callable[[int, int], None] = lambda total, already: None
    """(bytes to fetch in all, bytes already on disk from an earlier attempt)."""
    on_bytes: Callable[[int], None] = lambda n: None
    on_stage: Callable[[str, float], None] = lambda message, fraction: None


@dataclass(frozen=True)
class PullResult:
    name: str
    path: Path
    kind: str
    route: str
    downloaded_bytes: int
    commit: str
    notes: tuple[str, ...] = field(default=())


def parse_spec(text: str) -> PullSpec:
    """"owner/name", "owner/name@revision", "owner/name:FILE.gguf", "owner/name@rev:FILE.gguf"."""
    repo_part, _, filename = text.strip().partition(":")
    repo, _, revision = repo_part.partition("@")
    if not _REPO.match(repo) or (filename and not filename.lower().endswith(".gguf")):
        raise PullError(
            f"{text!r} is not a repository to pull: write OWNER/NAME, OWNER/NAME@REVISION, or "
            "OWNER/NAME:FILE.gguf (for example HuggingFaceTB/SmolLM2-135M-Instruct)."
        )
    return PullSpec(repo, revision or None, filename or None)


def check_online(offline: bool) -> None:
    """OfflineRefused when the privacy mode or HF_HUB_OFFLINE says nothing may leave."""
    if offline:
        raise OfflineRefused(
            "Tandem is offline (offline privacy mode, or --offline), so nothing may leave this machine. "
            "Switch the mode with Ctrl+G in tandem (to ask or auto) and pull again without --offline, or "
            "import a file you already have: `tandem models import FILE.gguf`."
        )
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        raise OfflineRefused(
            "HF_HUB_OFFLINE is set, so the Hugging Face Hub may not be reached. Unset it to pull, or "
            "import a file you already have: `tandem models import FILE.gguf`."
        )


def plan_pull(spec: PullSpec, *, endpoint: str | None = None, token: str | bool | None = None) -> RepoPlan:
    """Ask the Hub what the repository holds at the revision and decide what to fetch."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(
            spec.repo, revision=spec.revision, files_metadata=True
        )
    except Exception as error:  # huggingface_hub's and httpx2's errors, translated
        raise _explain(error, spec, endpoint) from None
    if not info.sha:
        raise PullError(f"The Hub gave no commit for {spec}; try again, or name a commit with @REVISION.")
    siblings = {s.rfilename: s for s in info.siblings or ()}
    kind, names = _choose_files(spec, list(siblings))
    files = tuple(RemoteFile(n, _expected(siblings[n])) for n in names)
    return RepoPlan(spec, info.sha, kind, files)


def pull(
    spec: PullSpec,
    *,
    name: str | None = None,
    quantization: str = "q4f16_1",
    endpoint: str | None = None,
    token: str | bool | None = None,
    offline: bool = False,
    overwrite: bool = False,
    reporter: PullReporter | None = None,
) -> PullResult:
    """Download (continuing an earlier attempt), check and install. On any failure nothing is
    left in the models folder; finished and partial downloads stay under downloads_dir() so the
    next attempt continues them."""
    report = reporter or PullReporter()
    check_online(offline)
    plan = plan_pull(spec, endpoint=endpoint, token=token)
    if plan.kind == "gguf":
        importer()  # before downloading gigabytes this build could not use
        target = name or name_for_gguf(plan.files[0].name)
    else:
        target = name or name_for_repo(spec.repo, quantization if plan.kind == "safetensors" else None)
    final = destination(target, overwrite)
    folder = downloads_dir() / spec.repo.replace("/", "--") / plan.commit
    already = _bytes_on_disk(folder, plan)
    needed = plan.total_bytes - already
    if plan.kind == "safetensors":
        needed += int(plan.total_bytes * _QUANT_OUTPUT_SHARE.get(quantization, 1.0))
    check_free_space(folder, needed, f"Pulling {spec}")
    report.on_start(plan.total_bytes, already)
    headers = _headers(token)
    from huggingface_hub import hf_hub_url

    for index, remote in enumerate(plan.files):
        url = hf_hub_url(spec.repo, remote.name, revision=plan.commit, endpoint=endpoint)
        try:
            download(url, folder / remote.name, remote.expected, headers=headers, on_bytes=report.on_bytes)
        except TransferError as error:
            raise PullError(f"{spec}: {error}") from None
        if index == 0 and plan.kind != "gguf":
            _check_config(plan, folder)  # the config comes first: refuse before the weights arrive
    fetched = plan.total_bytes - already
    if plan.kind == "mlc":
        return _install_mlc(plan, folder, final, fetched)
    if plan.kind == "safetensors":
        return _install_converted(plan, folder, final, quantization, fetched, report)
    return _install_gguf(plan, folder, target, fetched, overwrite, report)


def _check_config(plan: RepoPlan, folder: Path) -> None:
    """PullError when the repository's config names an architecture or quantization Tandem
    cannot run (its download is dropped: none of it is of use)."""
    from engine.config import model_config_from_hf, read_chat_config, read_json
    from engine.errors import ModelFileError

    try:
        if plan.kind == "mlc":
            read_chat_config(folder)
        else:
            config = read_json(folder / "config.json", "a Hugging Face checkpoint")
            model_config_from_hf(config, f"{plan.spec}: config.json")
    except ModelFileError as error:
        shutil.rmtree(folder, ignore_errors=True)
        raise PullError(f"{plan.spec} is a model Tandem cannot run: {error}") from None


def _install_mlc(plan: RepoPlan, folder: Path, final: Path, fetched: int) -> PullResult:
    source = ModelSource("hub", f"hf:{plan.spec.repo}@{plan.commit}", "MLC weights as they are")
    with staged(final.name) as staging:
        shutil.move(str(folder), staging)
        path = commit(staging, final, source)
    _prune_empty(folder.parent)
    return PullResult(final.name, path, "mlc", source.route, fetched, plan.commit)


def _install_converted(
    plan: RepoPlan, folder: Path, final: Path, quantization: str, fetched: int, report: PullReporter
) -> PullResult:
    from engine.convert import convert_hf_checkpoint
    from engine.errors import EngineError

    route = f"converted from safetensors to {quantization}"
    source = ModelSource("hub", f"hf:{plan.spec.repo}@{plan.commit}", route)
    with staged(final.name) as staging:
        try:
            convert_hf_checkpoint(folder, staging, quantization, on_progress=report.on_stage)
        except EngineError as error:
            raise PullError(f"{plan.spec} cannot be converted: {error}") from None
        path = commit(staging, final, source)
    shutil.rmtree(folder, ignore_errors=True)  # the checkpoint was only needed to convert
    _prune_empty(folder.parent)
    return PullResult(final.name, path, "safetensors", route, fetched, plan.commit)


def _install_gguf(
    plan: RepoPlan, folder: Path, target: str, fetched: int, overwrite: bool, report: PullReporter
) -> PullResult:
    remote = plan.files[0]
    downloaded = folder / remote.name
    # The model references the GGUF, so it moves to Tandem's store rather than being copied.
    kept = gguf_store_dir() / plan.spec.repo.replace("/", "--") / plan.commit / remote.name
    kept.parent.mkdir(parents=True, exist_ok=True)
    downloaded.replace(kept)
    source = ModelSource("hub", f"hf:{plan.spec.repo}@{plan.commit}:{remote.name}", owned_files=(str(kept),))
    try:
        installed = import_gguf_as(
            kept, target, source, overwrite=overwrite, on_progress=report.on_stage, sha256=remote.expected.sha256
        )
    except BaseException:
        kept.replace(downloaded)  # back where the next attempt looks for it
        raise
    _prune_empty(folder)
    _prune_empty(folder.parent)
    return PullResult(installed.name, installed.path, "gguf", installed.route, fetched, plan.commit)


def _choose_files(spec: PullSpec, names: list[str]) -> tuple[str, list[str]]:
    top = [n for n in names if "/" not in n]
    ggufs = sorted(n for n in names if n.lower().endswith(".gguf"))
    if spec.filename:
        if spec.filename not in names:
            listing = f" It holds: {', '.join(ggufs)}." if ggufs else " It holds no GGUF files."
            raise PullError(f"{spec.repo} has no file {spec.filename} at {spec.revision or 'main'}.{listing}")
        return "gguf", [spec.filename]
    if any(n in top for n in MLC_INDEXES):
        if MLC_CONFIG not in top:
            raise PullError(f"{spec} has MLC weights but no {MLC_CONFIG}; it is not a complete MLC model.")
        keep = [n for n in top if not any(fnmatch.fnmatch(n, p) for p in MLC_SKIPPED)]
        return "mlc", _config_first(keep, MLC_CONFIG)
    if any(n.endswith(".safetensors") for n in top) and "config.json" in top:
        keep = [n for n in top if n.endswith(".safetensors") or n in CHECKPOINT_FILES]
        return "safetensors", _config_first(keep, "config.json")
    if len(ggufs) == 1:
        return "gguf", ggufs
    if ggufs:
        shown = ", ".join(ggufs[:8]) + (" …" if len(ggufs) > 8 else "")
        raise PullError(
            f"{spec} holds {len(ggufs)} GGUF files; name the one you want: "
            f"`tandem models pull {spec.repo}:FILE.gguf` (files: {shown})."
        )
    raise PullError(
        f"{spec} holds no weights Tandem can use: no tensor-cache.json (MLC), no *.safetensors with a "
        "config.json, no .gguf file. Pick a repository that has one of them."
    )


def _config_first(names: list[str], config: str) -> list[str]:
    return [config] + sorted(n for n in names if n != config)


def _expected(sibling: Any) -> Expected:
    if sibling.lfs is not None:
        return Expected(size=sibling.lfs.size, sha256=sibling.lfs.sha256)
    return Expected(size=sibling.size, git_blob_id=sibling.blob_id)


def _bytes_on_disk(folder: Path, plan: RepoPlan) -> int:
    total = 0
    for remote in plan.files:
        for candidate in (folder / remote.name, folder / f"{remote.name}.part"):
            if candidate.is_file():
                total += min(candidate.stat().st_size, remote.expected.size or 0)
                break
    return total


def _headers(token: str | bool | None) -> dict[str, str]:
    from huggingface_hub.utils import build_hf_headers

    return build_hf_headers(token=token, library_name="tandem")


def _prune_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass


def _explain(error: Exception, spec: PullSpec, endpoint: str | None) -> PullError:
    from huggingface_hub import errors

    repo = spec.repo
    if isinstance(error, errors.GatedRepoError):
        return PullError(
            f"{repo} is gated: accept its terms on its Hub page while logged in, then give Tandem your "
            "token (`hf auth login`, or HF_TOKEN) and pull again."
        )
    if isinstance(error, errors.RevisionNotFoundError):
        return PullError(f"{repo} has no revision {spec.revision!r}; name an existing branch, tag or commit.")
    if isinstance(error, errors.RepositoryNotFoundError):
        return PullError(
            f"No repository {repo} on the Hub, or it is private: check the name (OWNER/NAME); "
            "for a private one, log in with `hf auth login` or set HF_TOKEN."
        )
    if isinstance(error, errors.HfHubHTTPError) and error.response is not None:
        status = error.response.status_code
        if status in (401, 403):
            return PullError(
                f"The Hub refused access to {repo} ({status}): it is private or gated. Log in with "
                "`hf auth login` or set HF_TOKEN, accept its terms if it asks, and pull again."
            )
        return PullError(f"The Hub answered {status} for {repo}; try again later.")
    if isinstance(error, errors.OfflineModeIsEnabled):
        return OfflineRefused("HF_HUB_OFFLINE is set, so the Hub may not be reached; unset it to pull.")
    name = type(error).__name__
    if "Connect" in name or "Timeout" in name or isinstance(error, OSError):
        where = endpoint or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
        return PullError(f"Cannot reach the Hugging Face Hub at {where} ({error}); check the connection.")
    return PullError(f"Asking the Hub about {repo} failed: {error}")
