"""Git repositories that repro reads from, always through a private bare mirror.

Bisecting moves worktrees around and fetches refs; doing that in the user's own
checkout would disturb their work (and their uncommitted changes), so every
repository is mirrored once into the cache and only the mirror is touched. The
mirror also outlives the user's checkout, which keeps cached builds explainable.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import git
from filelock import FileLock

from repro.errors import ReproError

_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")


_NOTED_DIRTY: set[str] = set()  # sources whose uncommitted changes were mentioned


class GitError(ReproError):
    """A repository or ref that cannot be used; the message names both."""


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    short: str
    subject: str
    author: str
    date: str  # ISO 8601, author date
    url: str | None
    parents: tuple[str, ...] = ()  # two or more: a merge


@dataclass(frozen=True)
class Merged:
    """What a merge commit brought in: the commits of the merged branch since it left
    the mainline (``base``), up to its tip, oldest first."""

    base: str
    tip: str
    commits: tuple[CommitInfo, ...]


def is_url(location: str) -> bool:
    """Remote locations are left alone; everything else is a path on this machine."""
    return "://" in location or bool(re.match(r"^[\w.-]+@[\w.-]+:", location))


def web_url_for(remote: str | None) -> str | None:
    """The browsable project page of a GitHub/GitLab remote, so reports can link commits."""
    if not remote:
        return None
    m = re.match(
        r"^(?:https?://|ssh://)?(?:[\w.-]+@)?(github\.com|gitlab\.com)[:/](.+?)(?:\.git)?/?$",
        remote.strip(),
    )
    if not m:
        return None
    return f"https://{m.group(1)}/{m.group(2)}"


def _commit_url(web_url: str | None, sha: str) -> str | None:
    if not web_url:
        return None
    if "gitlab.com" in web_url:
        return f"{web_url}/-/commit/{sha}"
    return f"{web_url}/commit/{sha}"


def _slug(location: str) -> str:
    name = location.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
    if name.endswith(".git"):
        name = name[:-4]
    if name in ("repo", ""):  # e.g. /work/.mirror/Owner+name/repo: the parent says more
        parent = location.rstrip("/").rsplit("/", 2)
        name = parent[-2] if len(parent) >= 2 else "repo"
    name = re.sub(r"[^A-Za-z0-9_.+-]", "_", name)
    return name[:40] or "repo"


def _normalise(location: str) -> str:
    if location.startswith("file://"):
        location = location[len("file://") :]
    elif location.startswith("file:"):
        location = location[len("file:") :]
    if is_url(location):
        return location.rstrip("/")
    return str(Path(location).expanduser().resolve())


class GitRepo:
    """A bare mirror in the cache standing for one source repository."""

    def __init__(self, mirror: Path, source: str, web_url: str | None = None) -> None:
        self.mirror = mirror
        self.source = source
        self._repo = git.Repo(mirror)
        self._lock = FileLock(str(mirror) + ".lock")
        self._refreshed = False
        self._in_source: set[str] = set()  # shas the local source was seen to hold
        self.web_url = web_url or self._config("repro.weburl")

    # --- opening -------------------------------------------------------------------

    @classmethod
    def open_cached(cls, location: str, cache_root: Path, *, web_url: str | None = None) -> GitRepo:
        """Mirror ``location`` under ``cache_root/git`` once; later calls reuse the mirror."""
        source = _normalise(location)
        if not is_url(source):
            src = Path(source)
            if not src.exists():
                raise GitError(f"git repository not found: {source}")
            try:
                git.Repo(src)
            except (git.InvalidGitRepositoryError, git.NoSuchPathError):
                raise GitError(f"not a git repository: {source}") from None
        digest = hashlib.sha256(source.encode()).hexdigest()[:12]
        root = cache_root / "git"
        root.mkdir(parents=True, exist_ok=True)
        mirror = root / f"{_slug(source)}-{digest}"
        with FileLock(str(mirror) + ".lock"):
            if not (mirror / "HEAD").exists():
                cls._clone(source, mirror, web_url)
        repo = cls(mirror, source, web_url)
        if web_url and repo._config("repro.weburl") != web_url:
            repo._set_config("repro.weburl", web_url)
        return repo

    @staticmethod
    def _clone(source: str, mirror: Path, web_url: str | None) -> None:
        tmp = mirror.with_name(mirror.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            git.Repo.clone_from(source, tmp, mirror=True)
        except git.GitCommandError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise GitError(f"cannot clone {source}: {_stderr(exc)}") from None
        cw = git.Repo(tmp).config_writer()
        try:
            cw.set_value("repro", "source", source)
            remote = _upstream_url(source)
            found = web_url or web_url_for(remote)
            if remote:
                cw.set_value("repro", "upstream", remote)
            if found:
                cw.set_value("repro", "weburl", found)
        finally:
            cw.release()
        os.replace(tmp, mirror)

    def _config(self, key: str) -> str | None:
        try:
            value = self._repo.git.config("--get", key)
        except git.GitCommandError:
            return None
        return str(value) or None

    def _set_config(self, key: str, value: str) -> None:
        with self._lock:
            self._repo.git.config(key, value)

    @property
    def name(self) -> str:
        """A short human name (``pyo3``, ``PyO3+pyo3`` for a fetched ``.../repo``)."""
        return _slug(self.source)

    def __repr__(self) -> str:
        return f"GitRepo({self.source!r}, mirror={str(self.mirror)!r})"

    # --- refs ----------------------------------------------------------------------

    def fetch(self) -> None:
        """Bring the mirror up to date with its source (all refs, as a mirror does)."""
        with self._lock:
            if self.shallow_note():
                # A mirror of a shallow clone stays shallow on a plain fetch, even once
                # its source has its whole history again.
                with contextlib.suppress(git.GitCommandError):
                    self._repo.git.fetch(
                        "--unshallow", "--prune", "--force", "origin", "+refs/*:refs/*"
                    )
            try:
                self._repo.git.fetch("--prune", "--force", "origin", "+refs/*:refs/*")
            except git.GitCommandError as exc:
                raise GitError(f"cannot fetch {self.source}: {_stderr(exc)}") from None
        self._refreshed = True

    def _try_resolve(self, ref: str) -> str | None:
        try:
            out = self._repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            return None
        return str(out).strip() or None

    def resolve(self, ref: str) -> str:
        """Full sha of ``ref``; names are refreshed once from a local source.

        A local source is cheap to fetch, and a branch name there should mean what the
        user's checkout means now, not what it meant when the mirror was made.
        """
        if not ref or ref.startswith("-"):
            raise GitError(f"invalid ref {ref!r} in {self.source}")
        full_sha = bool(_FULL_SHA.match(ref))
        self._refuse_ambiguous(ref)
        # A full sha means one commit everywhere (_gone_from_source checks the source
        # holds it, once): no question to the source on this path, which info() takes
        # for every commit of a range.
        here = None if full_sha else self._in_local_source(ref)
        if here is not None:
            # HEAD, @, HEAD~3, a branch: what the user's checkout means now. The mirror's
            # own HEAD was set when it was made and never follows the checkout, so a
            # `--fixed HEAD` once named a commit of a branch the user had left.
            if self._try_resolve(here) is None:
                self._refresh_quietly()
            if self._try_resolve(here) is not None:
                self._in_source.add(here)
                return here
        if not full_sha and not self._refreshed and not is_url(self.source):
            self._refresh_quietly()
        sha = self._try_resolve(ref)
        if sha is None and not self._refreshed:
            self._refresh_quietly()
            sha = self._try_resolve(ref)
        if sha is None:
            many = self._commits_beginning(ref)
            if len(many) > 1:
                shown = ", ".join(c[:12] for c in many[:4]) + (", ..." if len(many) > 4 else "")
                raise GitError(
                    f"{ref!r} is the start of {len(many)} commits in {self.source} ({shown}): "
                    "give more of the sha"
                )
            raise GitError(
                f"unknown ref {ref!r} in {self.source} (mirror {self.mirror})" + self.shallow_note()
            )
        if self._gone_from_source(sha):
            raise GitError(
                f"unknown ref {ref!r} in {self.source}: the cached mirror ({self.mirror}) "
                f"still holds {sha[:12]}, but {self.source} does not (was the repository "
                "made again, or rewritten?); give a commit it holds"
            )
        return sha

    def _commits_beginning(self, prefix: str) -> list[str]:
        """The commits whose sha starts with ``prefix`` (a short sha that is not
        unique is no unknown ref: said so, "unknown" sent users looking for a typo)."""
        if not re.fullmatch(r"[0-9a-fA-F]{4,39}", prefix):
            return []
        try:
            out = str(self._repo.git.rev_parse(f"--disambiguate={prefix.lower()}"))
        except git.GitCommandError:
            return []
        commits = []
        for sha in out.split():
            try:
                if str(self._repo.git.cat_file("-t", sha)).strip() == "commit":
                    commits.append(sha)
            except git.GitCommandError:
                continue
        return sorted(commits)

    def _local_source(self) -> str | None:
        """The source when it is a repository on this machine that can be asked (not a
        URL, not a path that is gone): the user's own, as it is now."""
        if is_url(self.source) or not Path(self.source).exists():
            return None
        return self.source

    def _in_local_source(self, ref: str) -> str | None:
        """``ref`` as the user's own repository reads it (None for a URL source, or a
        ref it does not know)."""
        local = self._local_source()
        if local is None:
            return None
        try:
            out = git.Git(local).rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except git.GitCommandError:
            return None
        return str(out).strip() or None

    def _refuse_ambiguous(self, ref: str) -> None:
        """A name that is a tag and a branch both: git takes the tag, with a warning the
        user never sees; a bisect then searched a line of history they did not mean."""
        if (
            not re.fullmatch(r"[\w./-]+", ref)
            or _FULL_SHA.match(ref)
            or ref.startswith(("refs/", "tags/", "heads/"))
        ):
            return
        local = self._local_source()
        repo = git.Git(local) if local is not None else self._repo.git
        found = []
        for kind in ("tags", "heads"):
            try:
                repo.rev_parse("--verify", "--quiet", f"refs/{kind}/{ref}")
                found.append(kind)
            except git.GitCommandError:
                pass
        if len(found) == 2:
            raise GitError(
                f"{ref!r} is both a tag and a branch in {self.source}: say tags/{ref} or "
                f"heads/{ref}"
            )

    def shallow_note(self) -> str:
        """A shallow clone lacks the older history a range reaches into; say so where a
        ref is not found or a range is cut, with the command that brings it."""
        try:
            shallow = str(self._repo.git.rev_parse("--is-shallow-repository")).strip()
        except git.GitCommandError:
            return ""
        if shallow != "true":
            return ""
        where = self.source if not is_url(self.source) else "your clone"
        return (
            f"; {where} is a shallow clone, without the older history: "
            f"git -C {shlex.quote(where)} fetch --unshallow --tags"
        )

    def uncommitted_note(self) -> str | None:
        """A warning when a local source's checkout has changes that are not committed:
        repro tests commits (through its mirror), so an edit a user made to try a fix is
        not what runs. Said once per source and process; None for a URL or a clean tree."""
        if self.source in _NOTED_DIRTY or is_url(self.source) or not Path(self.source).is_dir():
            return None
        try:
            out = git.Git(self.source).status("--porcelain", "--untracked-files=no")
        except git.GitCommandError:
            return None  # a bare repository, or not one at all: nothing to say
        changed = [line[3:] for line in str(out).splitlines() if line.strip()]
        if not changed:
            return None
        _NOTED_DIRTY.add(self.source)
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        return (
            f"{self.source} has uncommitted changes ({', '.join(changed[:3])}{more}): "
            "repro builds and runs commits, not the working tree; commit them to test them"
        )

    def _gone_from_source(self, sha: str) -> bool:
        """Whether a local source no longer holds ``sha``, which its mirror does: a fetch
        with ``--prune`` drops refs, never objects, so a repository made again (or
        rebased and collected) leaves its old commits resolvable in the mirror only,
        and a build of one would test code that is nowhere in the user's repository.
        Asked once a sha; False when the source cannot be asked (a URL, a path that
        is gone: then the mirror is all there is)."""
        if sha in self._in_source or self._local_source() is None:
            return False
        try:
            git.Git(self.source).rev_parse("--verify", "--quiet", f"{sha}^{{commit}}")
        except git.GitCommandError as exc:
            return exc.status == 1
        self._in_source.add(sha)
        return False

    def _refresh_quietly(self) -> None:
        try:
            self.fetch()
        except GitError:
            self._refreshed = True  # unreachable source: answer from the mirror as it is

    def is_ancestor(self, a: str, b: str) -> bool:
        """Whether ``b`` contains ``a`` (a commit is its own ancestor)."""
        sa, sb = self.resolve(a), self.resolve(b)
        try:
            self._repo.git.merge_base("--is-ancestor", sa, sb)
        except git.GitCommandError as exc:
            if exc.status == 1:
                return False
            raise GitError(f"git merge-base failed in {self.source}: {_stderr(exc)}") from None
        return True

    def first_parent_range(self, old: str, new: str) -> list[str]:
        """Commits from ``old`` to ``new`` inclusive, oldest first, along first parents.

        First parents are the mainline history a bisection walks: side branches of a
        merge were never the state of the project, so they are not candidates.
        """
        so, sn = self.resolve(old), self.resolve(new)
        if so == sn:
            return [so]
        out = self._repo.git.rev_list("--first-parent", "--reverse", f"{so}..{sn}")
        shas = [s for s in str(out).split() if s]
        if shas:
            parents = str(self._repo.git.rev_parse(f"{shas[0]}^@")).split()
            if parents and parents[0] == so:
                return [so, *shas]
        raise GitError(
            f"{old} is not a first-parent ancestor of {new} in {self.source}: "
            "give the older commit first, on the same line of history"
        )

    def depth(self, sha: str) -> int:
        """First-parent distance from the root: a stable id for the same commit in any range."""
        return int(str(self._repo.git.rev_list("--count", "--first-parent", self.resolve(sha))))

    def info(self, sha: str) -> CommitInfo:
        full = self.resolve(sha)
        out = str(self._repo.git.show("-s", "--format=%H%x00%h%x00%s%x00%an%x00%aI%x00%P", full))
        h, short, subject, author, date, parents = out.split("\x00", 5)
        return CommitInfo(
            h,
            short,
            subject,
            author,
            date.strip(),
            _commit_url(self.web_url, h),
            tuple(parents.split()),
        )

    def merged(self, sha: str) -> list[Merged]:
        """The branches a merge commit brought in, one for each parent after the first
        (none for a commit with one parent; several for an octopus merge): a bisect
        along first parents names the merge, and the change is among these."""
        parents = self.info(sha).parents
        out: list[Merged] = []
        for tip in parents[1:]:
            try:
                base = str(self._repo.git.merge_base(parents[0], tip)).strip()
                shas = str(self._repo.git.rev_list("--first-parent", "--reverse", f"{base}..{tip}"))
            except git.GitCommandError as exc:
                raise GitError(f"git cannot read the merge {sha[:12]}: {_stderr(exc)}") from None
            out.append(Merged(base, tip, tuple(self.info(s) for s in shas.split() if s)))
        return out

    def read_file(self, sha: str, path: str) -> str | None:
        """A file's text at a commit, or None where the commit has no such file."""
        try:
            return str(self._repo.git.show(f"{self.resolve(sha)}:{path}"))
        except git.GitCommandError:
            return None

    def changed_files(self, a: str, b: str) -> list[str]:
        out = str(self._repo.git.diff("--name-only", self.resolve(a), self.resolve(b)))
        return [line for line in out.splitlines() if line]

    # --- worktrees -----------------------------------------------------------------

    def worktree(self, sha: str, path: Path) -> Path:
        """A detached worktree at ``sha``, reusing (and moving) one that exists.

        Moving an existing tree with ``checkout`` rewrites only the files that differ,
        so build products next to unchanged sources stay newer and make skips them.
        """
        full = self.resolve(sha)
        path = path.absolute()
        with self._lock:
            if (path / ".git").is_file() and self._owns(path):
                wt = git.Repo(path)
                if wt.head.commit.hexsha != full or wt.is_dirty(untracked_files=False):
                    try:
                        wt.git.checkout("--detach", "--force", full)
                    except git.GitCommandError as exc:
                        raise GitError(
                            f"cannot move worktree {path} to {full}: {_stderr(exc)}"
                            + _missing_objects_hint(exc, str(self.mirror))
                        ) from None
                self._submodules(path, full)
                return path
            if path.exists():
                shutil.rmtree(path)
            self._repo.git.worktree("prune")
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                # Twice: a worktree that `add` left locked ("initializing") when repro was
                # killed during it survives prune, and one --force does not override a lock.
                self._repo.git.worktree("add", "--detach", "--force", "--force", str(path), full)
            except git.GitCommandError as exc:
                raise GitError(
                    f"cannot create worktree {path}: {_stderr(exc)}"
                    + _missing_objects_hint(exc, str(self.mirror))
                ) from None
            self._submodules(path, full)
        return path

    def _submodules(self, path: Path, sha: str) -> None:
        """The submodules a commit names, checked out at its commits: a project's build
        that needs one failed at every commit ("does not build"), as a fresh clone
        without --recurse-submodules does."""
        if not (path / ".gitmodules").is_file():
            return
        try:
            # protocol.file: a submodule on this machine is a path, which git refuses now
            # by default; the user's own repository named it.
            git.Repo(path).git.execute(
                ["git", "-c", "protocol.file.allow=always", "submodule", "update",
                 "--init", "--recursive", "--force"]
            )  # fmt: skip
        except git.GitCommandError as exc:
            raise GitError(
                f"cannot check out the submodules of {sha[:12]} in {path}: {_stderr(exc)}"
            ) from None

    def remove_worktree(self, path: Path) -> None:
        with self._lock:
            shutil.rmtree(path, ignore_errors=True)
            self._repo.git.worktree("prune")

    def _owns(self, path: Path) -> bool:
        try:
            common = git.Repo(path).git.rev_parse("--git-common-dir")
        except (git.GitCommandError, git.InvalidGitRepositoryError):
            return False
        return Path(path, str(common)).resolve() == self.mirror.resolve()


def _upstream_url(source: str) -> str | None:
    """The URL a local clone came from (read only), so a mirror of it can link commits."""
    if is_url(source):
        return source
    try:
        repo = git.Repo(source)
        for section in ("repro", 'remote "origin"', 'remote "upstream"'):
            key = "upstream" if section == "repro" else "url"
            reader = repo.config_reader()
            if reader.has_option(section, key):
                return str(reader.get_value(section, key))
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return None
    return None


_MISSING_OBJECTS = re.compile(
    r"unable to read sha1 file|missing (?:blob|tree|commit)|bad object|"
    r"Could not reset index file|did not receive expected object|invalid object"
)


def _missing_objects_hint(exc: git.GitCommandError, repo: str) -> str:
    """What to do when git cannot read the commit's files: a clone that lacks objects
    (sweep 16's fetched mirror lacked four blobs, and only git's last line was said)."""
    if not _MISSING_OBJECTS.search(str(exc.stderr or exc)):
        return ""
    return (
        f" (the repository {repo} lacks objects of this commit: a partial or damaged "
        f"clone; `git -C {repo} fsck` names them; fetch them or use a full clone)"
    )


def _stderr(exc: git.GitCommandError) -> str:
    text = str(exc.stderr or exc).strip()
    text = re.sub(r"^stderr: '?|'$", "", text, flags=re.M).strip()
    return text.splitlines()[-1] if text else str(exc)
