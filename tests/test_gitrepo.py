"""GitRepo on real repositories made by the tests (no network, no mocks)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from repro.errors import ReproError
from repro.gitrepo import GitError, GitRepo, web_url_for

ENV = {
    "GIT_AUTHOR_NAME": "Ada",
    "GIT_AUTHOR_EMAIL": "ada@example.org",
    "GIT_COMMITTER_NAME": "Ada",
    "GIT_COMMITTER_EMAIL": "ada@example.org",
    "GIT_AUTHOR_DATE": "2024-10-05T12:00:00+00:00",
    "GIT_COMMITTER_DATE": "2024-10-05T12:00:00+00:00",
    "HOME": "/nonexistent",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(repo: Path, *args: str) -> str:
    import os

    out = subprocess.run(
        ["git", "-C", str(repo), *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
    )
    return out.stdout.strip()


def commit(repo: Path, name: str, content: str | None = None) -> str:
    (repo / name).write_text(content if content is not None else name)
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}")
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def history(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """main: a - b - M(b, s1..s2) - c, with a side branch s1 - s2 merged at M."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    shas = {"a": commit(repo, "a"), "b": commit(repo, "b")}
    git(repo, "checkout", "-q", "-b", "side", shas["a"])
    shas["s1"] = commit(repo, "s1")
    shas["s2"] = commit(repo, "s2")
    git(repo, "checkout", "-q", "main")
    git(repo, "merge", "-q", "--no-ff", "-m", "merge side", "side")
    shas["m"] = git(repo, "rev-parse", "HEAD")
    shas["c"] = commit(repo, "c")
    git(repo, "remote", "add", "origin", "git@github.com:Owner/project.git")
    return repo, shas


def test_open_cached_mirrors_once_and_leaves_the_checkout_alone(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, shas = history
    cache = tmp_path / "cache"
    status_before = git(repo_path, "status", "--porcelain")
    r1 = GitRepo.open_cached(str(repo_path), cache)
    assert r1.mirror.parent == cache / "git"
    assert r1.mirror.name.startswith("upstream-")
    assert (r1.mirror / "HEAD").exists() and not (r1.mirror / ".git").exists()  # bare
    marker = r1.mirror / "marker"
    marker.write_text("same mirror")
    r2 = GitRepo.open_cached(str(repo_path) + "/", cache)
    assert r2.mirror == r1.mirror and marker.exists()
    assert r2.resolve("main") == shas["c"]
    assert git(repo_path, "status", "--porcelain") == status_before
    assert git(repo_path, "worktree", "list").count("\n") == 0


def test_resolve_refetches_a_local_source_for_new_refs(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, _shas = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    new = commit(repo_path, "d")
    fresh = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert fresh.resolve(new) == new  # full sha unknown to the mirror: fetched
    assert fresh.resolve("main") == new
    assert r.resolve(new[:10]) == new


def test_resolve_unknown_ref_names_ref_and_repo(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, _ = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    with pytest.raises(GitError) as err:
        r.resolve("no-such-branch")
    assert "no-such-branch" in str(err.value)
    assert str(repo_path) in str(err.value)
    assert isinstance(err.value, ReproError)


def test_a_commit_the_source_no_longer_holds_is_unknown(tmp_path: Path) -> None:
    """A repository made again under the same path: its old commits stay in the mirror
    (a fetch prunes refs, not objects), and must not be built as if they were the user's."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    old = commit(repo, "a", "first life")
    r = GitRepo.open_cached(str(repo), tmp_path / "cache")
    assert r.resolve(old) == old
    shutil.rmtree(repo)
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    new = commit(repo, "a", "second life")
    again = GitRepo.open_cached(str(repo), tmp_path / "cache")
    assert again.resolve("main") == new
    with pytest.raises(GitError) as err:
        again.resolve(old[:10])
    assert f"unknown ref '{old[:10]}' in {repo}" in str(err.value)
    assert "does not (was the repository made again" in str(err.value)
    # With the source gone altogether, the mirror is all there is: it still answers.
    shutil.rmtree(repo)
    assert again.resolve(new) == new


def test_open_cached_missing_repository(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not found"):
        GitRepo.open_cached(str(tmp_path / "nope"), tmp_path / "cache")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="not a git repository"):
        GitRepo.open_cached(str(tmp_path / "plain"), tmp_path / "cache")


def test_first_parent_range_follows_the_mainline(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.first_parent_range(s["a"], s["c"]) == [s["a"], s["b"], s["m"], s["c"]]
    assert r.first_parent_range(s["b"], s["m"]) == [s["b"], s["m"]]
    assert r.first_parent_range(s["c"], s["c"]) == [s["c"]]
    assert r.first_parent_range(s["a"][:8], "main") == [s["a"], s["b"], s["m"], s["c"]]


def test_first_parent_range_rejects_side_branch_and_reversed_ends(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.is_ancestor(s["s1"], s["c"])  # an ancestor, but only through the merge
    with pytest.raises(GitError, match="first-parent"):
        r.first_parent_range(s["s1"], s["c"])
    with pytest.raises(GitError, match="first-parent"):
        r.first_parent_range(s["c"], s["a"])


def test_is_ancestor(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.is_ancestor(s["a"], s["c"])
    assert r.is_ancestor(s["c"], s["c"])
    assert not r.is_ancestor(s["c"], s["a"])
    assert not r.is_ancestor(s["b"], s["s2"])


def test_info_and_links(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    info = r.info(s["b"])
    assert info.sha == s["b"] and s["b"].startswith(info.short)
    assert info.subject == "add b"
    assert info.author == "Ada"
    assert info.date.startswith("2024-10-05T12:00:00")
    # the checkout's origin is on GitHub: links work from the mirror too
    assert info.url == f"https://github.com/Owner/project/commit/{s['b']}"
    # a mirror of the mirror has no remote of its own: web_url override
    bare = GitRepo.open_cached(str(r.mirror), tmp_path / "cache2")
    assert bare.info(s["b"]).url == info.url  # recorded upstream carries over
    other = GitRepo.open_cached(
        str(r.mirror), tmp_path / "cache3", web_url="https://gitlab.com/g/p"
    )
    assert other.info(s["a"]).url == f"https://gitlab.com/g/p/-/commit/{s['a']}"


def test_web_url_for() -> None:
    assert web_url_for("https://github.com/PyO3/pyo3.git") == "https://github.com/PyO3/pyo3"
    assert web_url_for("git@github.com:PyO3/pyo3.git") == "https://github.com/PyO3/pyo3"
    assert web_url_for("ssh://git@gitlab.com/a/b") == "https://gitlab.com/a/b"
    assert web_url_for("https://example.org/x.git") is None
    assert web_url_for(None) is None


def test_worktree_reuse_and_move(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    wt = tmp_path / "wt"
    assert r.worktree(s["b"], wt) == wt.absolute()
    assert (wt / "b").exists() and not (wt / "c").exists()
    assert git(wt, "rev-parse", "HEAD") == s["b"]
    # reuse at the same sha keeps untracked files (build products)
    (wt / "build.o").write_text("object")
    a_mtime = (wt / "a").stat().st_mtime_ns
    r.worktree(s["b"], wt)
    assert (wt / "build.o").exists()
    # moving rewrites only what differs, keeps untracked products, drops local edits
    (wt / "b").write_text("local edit")
    r.worktree(s["c"], wt)
    assert git(wt, "rev-parse", "HEAD") == s["c"]
    assert (wt / "c").exists() and (wt / "b").read_text() == "b"
    assert (wt / "build.o").exists()
    assert (wt / "a").stat().st_mtime_ns == a_mtime
    # a directory that is not a worktree of this mirror is replaced
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "junk").write_text("x")
    r.worktree(s["a"], stray)
    assert git(stray, "rev-parse", "HEAD") == s["a"] and not (stray / "junk").exists()
    # the user's checkout never gained a worktree
    assert git(repo_path, "worktree", "list").count("\n") == 0


def test_depth_is_the_first_parent_distance(tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "demo"))
    from make_repo import make_repo

    src = make_repo(tmp_path / "demo")
    repo = GitRepo.open_cached(str(src), tmp_path / "cache")
    assert repo.depth("v1.0") == 1
    assert repo.depth("v1.1") == 4
    assert repo.depth("main") == len(repo.first_parent_range("v1.0", "main"))


def test_worktree_after_a_kill_during_its_creation(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """`git worktree add` locks the new worktree ("initializing") until it is done; a repro
    killed meanwhile left it locked, half made, and the resumed bisect could not build that
    commit: "cannot create worktree ...: use 'add -f -f' to override" (seen in a fresh-clone
    run of test_resume_after_kill)."""
    repo_path, s = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    wt = tmp_path / "wt"
    r.worktree(s["a"], wt)
    git(r.mirror, "worktree", "lock", "--reason", "initializing", str(wt.absolute()))
    (wt / ".git").unlink()  # the checkout never got as far as its .git file
    assert r.worktree(s["b"], wt) == wt.absolute()
    assert git(wt, "rev-parse", "HEAD") == s["b"] and (wt / "b").exists()


def test_uncommitted_changes_in_a_local_source_are_mentioned_once(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, _ = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    (repo_path / "untracked.txt").write_text("not part of any commit")
    assert r.uncommitted_note() is None  # clean tracked files: nothing to say
    (repo_path / "c").write_text("an edit to try a fix")
    again = GitRepo.open_cached(str(repo_path) + "/", tmp_path / "cache2")
    note = again.uncommitted_note()
    assert note is not None and "uncommitted changes (c)" in note and "commit them" in note
    assert again.uncommitted_note() is None  # once per source and process


def test_a_shallow_clone_says_so_and_its_mirror_deepens_with_it(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, shas = history
    shallow = tmp_path / "shallow"
    subprocess.run(
        ["git", "clone", "-q", "--depth", "1", f"file://{repo_path}", str(shallow)], check=True
    )
    r = GitRepo.open_cached(str(shallow), tmp_path / "cache")
    with pytest.raises(GitError) as err:
        r.resolve(shas["a"][:10])
    said = str(err.value)
    assert "is a shallow clone" in said and f"git -C {shallow} fetch --unshallow --tags" in said
    # As the error says; the mirror made from the shallow clone deepens too.
    git(shallow, "fetch", "-q", "--unshallow", "--tags")
    r = GitRepo.open_cached(str(shallow), tmp_path / "cache")
    assert r.resolve(shas["a"][:10]) == shas["a"]
    assert r.first_parent_range(shas["a"], shas["c"]) == [
        shas["a"],
        shas["b"],
        shas["m"],
        shas["c"],
    ]


def test_a_merge_says_what_it_brought(history: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    repo_path, shas = history
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.merged(shas["c"]) == []
    (merged,) = r.merged(shas["m"])
    assert (merged.base, merged.tip) == (shas["a"], shas["s2"])
    assert [c.sha for c in merged.commits] == [shas["s1"], shas["s2"]]
    assert len(r.info(shas["m"]).parents) == 2


def test_a_worktree_has_its_commits_submodules(tmp_path: Path) -> None:
    """A build that needs a submodule failed at every commit: worktrees had none."""
    lib = tmp_path / "lib"
    lib.mkdir()
    git(lib, "init", "-q", "-b", "main")
    one = commit(lib, "extra.h", "#define EXTRA 1\n")
    two = commit(lib, "extra.h", "#define EXTRA 2\n")
    top = tmp_path / "top"
    top.mkdir()
    git(top, "init", "-q", "-b", "main")
    commit(top, "main.c")
    git(top, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(lib), "lib")
    git(top / "lib", "checkout", "-q", one)
    git(top, "add", "lib")
    git(top, "commit", "-q", "-m", "lib at one")
    first = git(top, "rev-parse", "HEAD")
    git(top / "lib", "checkout", "-q", two)
    git(top, "add", "lib")
    git(top, "commit", "-q", "-m", "lib at two")
    second = git(top, "rev-parse", "HEAD")
    r = GitRepo.open_cached(str(top), tmp_path / "cache")
    wt = r.worktree(first, tmp_path / "wt")
    assert (wt / "lib" / "extra.h").read_text() == "#define EXTRA 1\n"
    r.worktree(second, wt)  # moved, as a bisect moves it
    assert (wt / "lib" / "extra.h").read_text() == "#define EXTRA 2\n"


def test_head_and_branches_mean_the_users_checkout_now(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    """The mirror's HEAD is set when it is made and never follows the checkout: a
    `--fixed HEAD` once named a commit of a branch the user had left."""
    repo_path, shas = history
    git(repo_path, "checkout", "-q", "side")
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.resolve("HEAD") == shas["s2"]
    git(repo_path, "checkout", "-q", "main")
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    assert r.resolve("HEAD") == shas["c"]
    assert r.resolve("@") == shas["c"]
    assert r.resolve("HEAD~1") == shas["m"]
    assert r.first_parent_range(shas["a"], "HEAD")[-1] == shas["c"]


def test_a_name_that_is_a_tag_and_a_branch_is_refused(
    history: tuple[Path, dict[str, str]], tmp_path: Path
) -> None:
    repo_path, shas = history
    git(repo_path, "branch", "release", shas["s2"])
    git(repo_path, "tag", "release", shas["c"])
    r = GitRepo.open_cached(str(repo_path), tmp_path / "cache")
    with pytest.raises(GitError, match=r"both a tag and a branch.*tags/release or heads/release"):
        r.resolve("release")
    assert r.resolve("tags/release") == shas["c"]
    assert r.resolve("heads/release") == shas["s2"]


def test_a_short_sha_of_several_commits_is_called_ambiguous_not_unknown(tmp_path: Path) -> None:
    """ "unknown ref" of a short sha that begins two commits sent users looking for a typo."""
    import os
    from collections import defaultdict

    repo = tmp_path / "many"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    stream = []
    for k in range(1500):  # at 4 digits, two commits of 1500 share one (near certain)
        msg = f"c{k}\n".encode()
        stream.append(
            b"commit refs/heads/main\ncommitter Ada <a@e.org> 1700000000 +0000\n"
            + f"data {len(msg)}\n".encode()
            + msg
            + b"\n"
        )
    subprocess.run(
        ["git", "-C", str(repo), "fast-import", "--quiet"],
        input=b"".join(stream),
        check=True,
        env={**os.environ, **ENV},
    )
    by_prefix: dict[str, list[str]] = defaultdict(list)
    for sha in git(repo, "rev-list", "main").split():
        by_prefix[sha[:4]].append(sha)
    prefix = next(p for p, shas in sorted(by_prefix.items()) if len(shas) > 1)
    r = GitRepo.open_cached(str(repo), tmp_path / "cache")
    with pytest.raises(GitError) as err:
        r.resolve(prefix)
    said = str(err.value)
    assert "give more of the sha" in said and "unknown" not in said, said
    assert all(s[:12] in said for s in by_prefix[prefix][:4])
    assert r.resolve(by_prefix[prefix][0][:12]) == by_prefix[prefix][0]


def test_a_clone_that_lacks_a_commits_files_says_so(tmp_path: Path) -> None:
    """Sweep 16: a fetched mirror lacked four of cramjam's blobs, and the worktree
    failed with git's last line only ("Could not reset index file to revision 'HEAD'")."""
    repo = tmp_path / "upstream"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    sha = commit(repo, "data.bin", "bytes that go missing\n")
    cache = tmp_path / "cache"
    r = GitRepo.open_cached(str(repo), cache)
    blob = git(repo, "rev-parse", f"{sha}:data.bin")
    loose = r.mirror / "objects" / blob[:2] / blob[2:]
    if not loose.exists():
        pytest.skip("the mirror packed its objects")
    loose.chmod(0o644)
    loose.unlink()
    with pytest.raises(GitError) as err:
        r.worktree(sha, tmp_path / "wt")
    said = str(err.value)
    assert "lacks objects of this commit" in said and "fsck" in said, said
