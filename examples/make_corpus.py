"""Generate the quickstart corpus: shell-command safety, five classes.

Each sample is one shell command line, labelled with one of five classes:

``safe``
    Read-only or idempotent, deterministic and properly quoted
    (``ls -la src``, ``grep -rn TODO src``, ``mkdir -p build``, ``cat "$f"``).
``needs-quoting``
    Would be fine, but has an unquoted expansion or a word-splitting hazard
    (``cp $src $dst``, ``cat my notes.txt``, ``find . -name *.log``).
``non-deterministic``
    Output or effect depends on the clock, randomness, pids, the network or
    unsorted ordering (``date +%s``, ``echo $RANDOM``, ``mktemp``, ``curl -s URL``).
``non-idempotent``
    Running it twice is not the same as running it once
    (``echo x >> log``, ``mkdir build``, ``git commit``, ``mv a b``, ``ln -s a b``).
``unsafe``
    Destructive or dangerous (``rm -rf $dir/``, ``curl URL | sh``, ``chmod -R 777 /``,
    ``dd of=/dev/sda``, fork bombs, ``eval "$input"``, writes to ``/etc``).

When a command has several faults the most severe wins, in the order
unsafe > non-idempotent > non-deterministic > needs-quoting > safe.

How it is generated: every class has a table of command templates whose
``{slot}`` fields are filled from shared pools (files, directories, variables,
URLs, system paths, ...). Some commands are chained with ``&&`` or ``;`` to a
companion command of a less severe class, so the label is still the class of
the main command. The same command words (rm, cp, echo, cat, curl, mkdir, git,
find, sed, sudo, ...) occur in several classes, so no single keyword decides the
label. Class sizes are imbalanced like real data (about 45/20/15/13/7 percent)
and about 2% of labels are flipped at random to mimic annotation noise.

Everything comes from ``random.Random(seed)`` and only the standard library is
used, so the output is byte-identical on every run::

    python examples/make_corpus.py            # writes examples/data/shell-safety.jsonl
    python examples/make_corpus.py --n 500 --seed 7 --out /tmp/small.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable
from pathlib import Path

LABELS = ("safe", "needs-quoting", "non-deterministic", "non-idempotent", "unsafe")
"""Class names, from least to most severe."""

SHARES = {
    "safe": 0.45,
    "needs-quoting": 0.20,
    "non-deterministic": 0.15,
    "non-idempotent": 0.13,
    "unsafe": 0.07,
}
"""Fraction of the corpus in each class."""

NOISE = 0.02
"""Fraction of samples whose label is replaced by a different, random one."""

CHAIN_RATE = 0.3
"""Probability that a command is chained to a companion command."""

DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "shell-safety.jsonl"

# --------------------------------------------------------------------------- pools
# fmt: off

DIRS = (
    "src", "build", "dist", "docs", "tests", "logs", "out", "tmp", "scripts", "data",
    "assets", "config", "lib", "bin", ".cache", "target", "vendor", "reports",
    "./build/cache", "src/utils", "src/api", "docs/img", "tests/fixtures", "data/raw",
    "~/projects/app", "~/notes", "~/Downloads", "/var/log", "/opt/app", "/srv/www",
)
SUBDIRS = ("old", "tmp", "cache", "v2", "backup", "archive", "out", "release", "parts", "2024")
NAMES = (
    "main.c", "main.py", "app.py", "utils.py", "setup.py", "index.js", "server.go",
    "lib.rs", "Makefile", "README.md", "CHANGELOG.md", "notes.txt", "todo.txt",
    "data.csv", "users.csv", "config.yaml", "settings.toml", "package.json",
    "results.json", "app.log", "error.log", "access.log", "report.pdf", "schema.sql",
    "dump.sql", "style.css", "index.html", "Dockerfile", "requirements.txt", "words.txt",
    "input.txt", "output.txt", "model.bin", "image.png", "deploy.sh", "run.sh",
)
SPACED = (
    "my notes.txt", "Quarterly Report.pdf", "old backup.tar.gz", "Screen Shot 2021.png",
    "meeting minutes.md", "final draft v2.docx", "To Do.txt", "project plan.xlsx",
    "photo 01.jpg", "new folder", "Program Files", "release notes.md", "copy of data.csv",
)
JSON_FILES = ("package.json", "results.json", "config.json", "manifest.json", "tsconfig.json")
ARCHIVES = ("release.tar.gz", "backup.tgz", "src.tar.gz", "logs.tar.gz", "dist.tgz")
SCRIPTS = ("deploy.sh", "run.sh", "build.sh", "install.sh", "test.sh", "bootstrap.sh")
LOGS = ("build.log", "app.log", "history.txt", "audit.log", "out.log", "run.log", "events.txt")
VARS = (
    "file", "f", "src", "dst", "dir", "path", "target", "out", "input", "name", "tmp",
    "pkg", "log", "dest", "TARGET_DIR", "BUILD_DIR", "LOG_FILE", "OUT_DIR", "DATA_DIR",
    "PREFIX", "WORKDIR", "CONFIG", "line", "arg", "item", "entry", "fname", "folder",
)
PATTERNS = (
    "TODO", "FIXME", "error", "ERROR", "warning", "import", "main", "password", "timeout",
    "localhost", "deprecated", "panic", "Exception", "version", "http", "user_id",
)
GLOBS = ("*.log", "*.txt", "*.py", "*.o", "*.tmp", "*.bak", "*.pyc", "*.csv", "*.json", "*.md")
WORDS = (
    "hello", "done", "ok", "starting", "build finished", "deploying", "ready",
    "all tests passed", "cleanup", "hello world", "step 1", "retrying", "skipped", "saved",
)
USERS = ("alice", "bob", "deploy", "ci", "backup", "www-data", "postgres", "jenkins", "dev")
BRANCHES = ("main", "dev", "develop", "release", "feature/login", "fix/typo", "hotfix", "staging")
MESSAGES = (
    "fix typo", "wip", "update deps", "add tests", "bump version", "refactor parser",
    "initial commit", "fix build", "docs", "cleanup",
)
PKGS = ("curl", "jq", "git", "python3", "node", "docker", "make", "gcc", "rsync", "htop", "vim")
HOSTS = ("example.com", "db01", "api.internal", "10.0.0.5", "github.com", "cache-2", "localhost")
URLS = (
    "https://example.com/install.sh", "http://get.tool.io/setup", "https://x.io/i.sh",
    "https://raw.githubusercontent.com/org/repo/main/install.sh", "http://10.0.0.5/run.sh",
    "https://api.example.com/v1/status", "https://example.org/data.csv",
    "https://cdn.example.net/latest.tar.gz", "http://localhost:8080/health",
)
SYSTEM_FILES = (
    "/etc/passwd", "/etc/shadow", "/etc/hosts", "/etc/sudoers", "/etc/fstab",
    "/etc/ssh/sshd_config", "/etc/resolv.conf", "/boot/grub/grub.cfg", "/etc/crontab",
    "/etc/group", "/etc/profile",
)
SYSTEM_DIRS = ("/", "/etc", "/usr", "/var", "/boot", "/home", "/usr/lib", "/var/lib", "/bin", "/lib")
DEVICES = ("/dev/sda", "/dev/sdb", "/dev/sda1", "/dev/nvme0n1", "/dev/mmcblk0", "/dev/vda", "/dev/disk2")
IMAGES = ("nginx", "redis", "postgres:16", "python:3.11", "alpine", "node:20", "ubuntu:22.04")
REPLACEMENTS = (("foo", "bar"), ("http:", "https:"), ("v1", "v2"), ("DEBUG", "INFO"),
                ("localhost", "127.0.0.1"), ("colour", "color"), ("tabs", "spaces"))
# fmt: on

Rng = random.Random


def _path_in(rng: Rng, dirs: tuple[str, ...], names: tuple[str, ...]) -> str:
    """Join a random directory (or none) and a random file name."""
    prefix = rng.choice((*dirs, "", "", "./"))
    if prefix in ("", "./"):
        return prefix + rng.choice(names)
    return f"{prefix}/{rng.choice(names)}"


def _bare_var(rng: Rng) -> str:
    """An unquoted variable expansion: ``$f`` or ``${f}``."""
    name = rng.choice(VARS)
    return f"${{{name}}}" if rng.random() < 0.25 else f"${name}"


def _quoted_var(rng: Rng) -> str:
    """A double-quoted variable expansion, sometimes with a path suffix."""
    inner = _bare_var(rng)
    roll = rng.random()
    if roll < 0.2:
        inner += "/" + rng.choice(NAMES)
    elif roll < 0.3:
        inner += "/" + rng.choice(SUBDIRS)
    return f'"{inner}"'


def _quote(rng: Rng, text: str) -> str:
    """Wrap text in single or double quotes, leaving a leading ``~/`` outside to expand."""
    home, text = ("~/", text[2:]) if text.startswith("~/") else ("", text)
    return home + (f"'{text}'" if rng.random() < 0.4 else f'"{text}"')


SLOTS: dict[str, Callable[[Rng], str]] = {
    "file": lambda r: _path_in(r, DIRS, NAMES),
    "qfile": lambda r: _quote(r, _path_in(r, DIRS, NAMES)),
    "name": lambda r: r.choice(NAMES),
    "dir": lambda r: r.choice(DIRS),
    "qdir": lambda r: _quote(r, r.choice(DIRS)),
    "sub": lambda r: r.choice(SUBDIRS),
    "spaced": lambda r: _path_in(r, DIRS[:20], SPACED),
    "qspaced": lambda r: _quote(r, _path_in(r, DIRS[:20], SPACED)),
    "json": lambda r: r.choice(JSON_FILES),
    "archive": lambda r: r.choice(ARCHIVES),
    "script": lambda r: r.choice(SCRIPTS),
    "log": lambda r: _path_in(r, ("logs", "out", "/tmp", "~"), LOGS),
    "var": _bare_var,
    "qvar": _quoted_var,
    "vname": lambda r: r.choice(VARS),
    "pat": lambda r: r.choice(PATTERNS),
    "glob": lambda r: r.choice(GLOBS),
    "words": lambda r: r.choice(WORDS),
    "word": lambda r: r.choice(WORDS).split()[0],
    "n": lambda r: str(r.randint(1, 50)),
    "user": lambda r: r.choice(USERS),
    "branch": lambda r: r.choice(BRANCHES),
    "msg": lambda r: r.choice(MESSAGES),
    "pkg": lambda r: r.choice(PKGS),
    "host": lambda r: r.choice(HOSTS),
    "url": lambda r: r.choice(URLS),
    "sysfile": lambda r: r.choice(SYSTEM_FILES),
    "sysdir": lambda r: r.choice(SYSTEM_DIRS),
    "dev": lambda r: r.choice(DEVICES),
    "image": lambda r: r.choice(IMAGES),
    "ver": lambda r: f"{r.randint(0, 3)}.{r.randint(0, 12)}.{r.randint(0, 9)}",
    "sed": lambda r: "s/{}/{}/g".format(*r.choice(REPLACEMENTS)),
}
"""Slot name -> filler. ``{file}`` twice is one value; ``{file}`` and ``{file2}`` are two."""

# ----------------------------------------------------------------------- templates
# fmt: off

TEMPLATES: dict[str, tuple[str, ...]] = {
    "safe": (
        "ls -la {dir}", "ls {qdir}", "ls -1 {dir} | sort", "cat {file}", "cat {qfile}",
        "head -n {n} {file}", "tail -n {n} {qfile}", "wc -l {file}", "wc -c {qvar}",
        "grep -rn {pat} {dir}", "grep -c {pat} {qfile}", "grep -i {pat} {qvar}",
        "git status", "git log --oneline -n {n}", "git diff {branch} -- {file}",
        "git show HEAD:{name}", "git rev-parse HEAD", "git branch --list",
        "find {dir} -name '{glob}'", "find {dir} -type f -name \"{glob}\" | sort",
        "find {dir} -name '{glob}' -print0 | xargs -0 wc -l", "find {dir} -name '*.pyc' -delete",
        "find {dir} -name '{glob}' | sort | head -n {n}", "sort {file} | uniq -c",
        "echo \"{words}\"", "echo {word}", "echo \"{words}\" > {file}", "printf '%s\\n' {qvar}",
        "cat {qvar}", "cat {qspaced}", "head -n {n} {qspaced}", "cp {qspaced} {dir}/",
        "test -f {qvar} && echo \"{words}\"", "[[ -f $file ]] && cat \"$file\"",
        "[[ -n {var} ]] && echo {word}", "[[ {var} == \"{word}\" ]] && ls {dir}",
        "{vname}={var}/{name}", "{vname}=$(basename {qvar})", "case {var} in {glob}) echo {word};; esac",
        "mkdir -p {dir}", "mkdir -p {qvar}", "mkdir -p {dir}/{sub}", "cp {qfile} {qfile2}",
        "cp {file} {file}.bak", "cp -r {dir}/. {dir2}", "rm -f {file}", "rm -f {qvar}",
        "rm -rf ./build/{sub}", "ln -sf {file} {name}", "du -sh {dir}", "file {qfile}",
        "sha256sum {file}", "diff {file} {file2}", "diff -u {qvar} {qfile}", "tar -tzf {archive}",
        "jq '.name' {json}", "python3 -m json.tool {json}", "curl --version",
        "curl --help | grep {pat}", "sed -n '1,{n}p' {file}", "sed -i '{sed}' {file}",
        "awk '{print $1}' {file}", "export PATH=\"$HOME/bin:$PATH\"", "basename {qvar}",
        "dirname {qvar}", "realpath {file}", "which {pkg}", "command -v {pkg}",
        "chmod 644 {file}", "chmod +x {script}", "chmod 755 {qvar}", "sudo cat {sysfile}",
        "cat {sysfile}", "grep {user} /etc/passwd", "sudo ls -la {sysdir}", "pip list",
        "kubectl apply -f k8s/{word}.yaml", "docker images", "echo $?", "exit $?", "echo \"$@\"",
        "for f in {dir}/{glob}; do wc -l \"$f\"; done", "cd {qdir} && ls",
        "git diff --stat", "rm -i {file}", "cat {qvar} | sort | uniq",
    ),
    "needs-quoting": (
        "cat {var}", "cp {var} {var2}", "cp {var} {qdir}", "rm -f {var}", "rm -f {var}/{glob}",
        "ls {var}", "ls -la {var}/{sub}", "wc -l {var}", "grep {pat} {var}", "grep -rn {pat} {var}",
        "head -n {n} {spaced}", "cat {spaced}", "cp {spaced} {dir}/", "wc -l {spaced}",
        "find {dir} -name {glob}", "find . -name {glob} -print", "ls {dir}/{glob} | wc -l",
        "echo {var}", "echo \"{words}:\" {var}", "for f in $(ls {dir}); do cat $f; done",
        "for f in {dir}/{glob}; do wc -l $f; done", "mkdir -p {var}", "mkdir -p {var}/{sub}",
        "test -f {var} && echo {word}", "[ -z {var} ] && echo \"{words}\"",
        "[ {var} = \"{word}\" ] && echo {word}", "chmod 644 {var}", "sha256sum {var}",
        "diff {var} {file}", "cd {var} && ls", "cd {var} && git status",
        "find {dir} -name '{glob}' | xargs wc -l", "find {dir} -name '{glob}' | xargs grep {pat}",
        "ln -sf {var} {name}", "cat {qvar} {var}", "grep -c {pat} $(cat {file})",
        "printf '%s\\n' {var}", "basename {var}", "du -sh {var}", "tar -tzf {var}",
        "cp {file} {var}", "rm -f {spaced}", "bash {script} {var}", "sed -i '{sed}' {var}",
        "jq '.name' {var}", "echo $@", "sort {var} | uniq -c", "cat {var} | grep {pat}",
        "sudo cat {var}", "file {spaced}", "ls -la {spaced}", "git add {var}",
    ),
    "non-deterministic": (
        "date", "date +%s", "date +%Y-%m-%d", "echo $RANDOM", "echo \"$RANDOM\"",
        "echo \"seed=$RANDOM\" > {file}", "echo $$", "echo \"{words} $(date +%s)\"",
        "echo \"build-$(date +%F)\" > {file}", "mktemp", "mktemp -d", "tmp=$(mktemp) && cp {file} \"$tmp\"",
        "uuidgen", "uuidgen > {file}", "cat /proc/sys/kernel/random/uuid",
        "head -c {n} /dev/urandom | base64", "od -An -N4 -tu4 /dev/urandom", "shuf {file}",
        "shuf -n {n} {file}", "sort -R {qfile}", "cat {file} | shuf | head -n {n}",
        "ps aux | grep {pkg}", "ps -ef | head -n {n}", "top -bn1 | head -n {n}", "free -m",
        "uptime", "df -h {dir}", "ls -t {dir} | head -1", "ls -t {qdir} | head -n {n}",
        "find {dir} -newer {file}", "find {dir} -mtime -{n}", "find {dir} -mtime +{n} -delete",
        "find {dir} -name '{glob}' | head -n 1", "find {dir} -type f | head -n {n}",
        "curl -s {url}", "curl -fsSL {url} -o {file}", "wget -qO- {url}", "ping -c {n} {host}",
        "dig +short {host}", "git fetch && git log origin/{branch} -n 1",
        "git log --since=\"{n} days ago\" --oneline", "cp {qfile} \"backup-$(date +%s).bak\"",
        "ls /tmp/*.$$", "echo $SECONDS", "sleep $((RANDOM % {n}))",
        "python3 -c \"import random; print(random.random())\"", "who", "last -n {n}",
        "cat {qvar} | shuf -n 1", "grep {pat} {file} | shuf", "echo \"$(date)\" > {file}",
        "curl -s {url} | jq '.status'", "pip install {pkg}", "docker ps", "cat /proc/loadavg",
        "tmpdir=$(mktemp -d) && cd \"$tmpdir\"", "echo $BASHPID", "ls -lu {dir}",
        "cat {file} | sort -R | head -n {n}", "git pull origin {branch}",
    ),
    "non-idempotent": (
        "echo \"{words}\" >> {log}", "echo {word} >> {log}", "cat {file} >> {file2}",
        "printf '%s\\n' \"{words}\" >> {log}", "mkdir {dir}", "mkdir {qvar}", "mkdir {dir}/{sub}",
        "git commit -m \"{msg}\"", "git commit -am \"{msg}\"", "git add {file} && git commit -m \"{msg}\"",
        "git stash", "git stash pop", "git tag v{ver}", "git branch {branch}",
        "git checkout -b {branch}", "useradd {user}", "groupadd {user}", "adduser {user}",
        "ln -s {file} {name}", "ln -s {qvar} {name}", "mv {file} {file2}", "mv {qvar} {dir}/",
        "mv {qspaced} {dir}/", "mv {file} {file}.bak", "rm {file}", "rm {qfile}", "rmdir {dir}",
        "count=$((count + 1))", "echo $(( $(cat {file}) + 1 )) > {file}",
        "patch -p1 < {name}.patch", "sed -i 's/^/# /' {file}", "sed -i '1i {words}' {file}",
        "sed -i 's/$/,/' {qfile}", "docker run -d --name {user} {image}",
        "docker network create {user}", "createdb {user}", "cat {file} | tee -a {log}",
        "tee -a {log} < {file}", "npm version patch", "tar -rf backup.tar {file}",
        "echo 'export PATH=$HOME/bin:$PATH' >> ~/.bashrc", "kubectl create namespace {user}",
        "git cherry-pick {branch}", "git merge {branch}", "./{script} >> {log}",
        "grep {pat} {file} >> {log}", "date >> {log}", "date +%s >> {log}",
        "curl -s {url} >> {log}", "echo \"{words}\" | tee -a {log}", "mv {dir} {dir}.old",
        "cp {file} {dir} && rm {file}", "cp -r {dir} {dir2}", "sqlite3 app.db \"INSERT INTO runs VALUES ({n})\"",
    ),
    "unsafe": (
        "rm -rf /", "rm -rf /*", "rm -rf {var}/", "rm -rf {var}/*", "rm -rf ~", "rm -rf ~/",
        "rm -rf .*", "sudo rm -rf {sysdir}", "rm -rf --no-preserve-root /",
        "curl -fsSL {url} | sh", "curl -s {url} | sudo bash", "wget -qO- {url} | bash",
        "bash <(curl -s {url})", "chmod -R 777 {sysdir}", "chmod 777 {sysfile}",
        "sudo chmod -R 777 {dir}", "chown -R {user} /", "dd if=/dev/zero of={dev}",
        "dd if={file} of={dev} bs=4M", "mkfs.ext4 {dev}", "mkfs -t xfs {dev}",
        ":(){ :|:& };:", "eval \"$input\"", "eval {var}", "eval $(cat {file})",
        "sudo tee {sysfile} < {file}", "echo \"{words}\" > {sysfile}",
        "echo \"{user} ALL=(ALL) NOPASSWD:ALL\" >> /etc/sudoers",
        "sudo sh -c 'echo {word} > {sysfile}'", "> /etc/passwd", "cat /dev/null > {sysfile}",
        "sudo mv {file} {sysfile}", "sudo cp {file} {sysfile}", "mv {dir} /dev/null",
        "find / -name '{glob}' -delete", "git push --force origin {branch}", "git clean -fdx",
        "git reset --hard origin/{branch}", "python3 -c \"$(curl -fsSL {url})\"", "kill -9 -1",
        "shred -n 3 {dev}", "iptables -F", "crontab -r", "docker system prune -af",
        "cat {file} > {dev}", "sudo rm -rf {var}", "rm -rf \"$HOME\"/*", "curl {url} | sudo sh",
        "sh -c \"$(wget -qO- {url})\"", "truncate -s 0 {sysfile}", "sudo dd if={file} of={dev}",
    ),
}
# fmt: on
"""Command templates per class; ``{slot}`` fields are filled from :data:`SLOTS`."""

SEPARATORS = (" && ", " && ", " ; ")

_SLOT_RE = re.compile(r"\{([a-z]+)(\d?)\}")


def fill(template: str, rng: Rng) -> str:
    """Fill the ``{slot}`` fields of a template.

    A repeated field gets the same value; numbered fields of one slot (``{dir}``,
    ``{dir2}``) get different values where the pool allows.
    """
    drawn: dict[str, str] = {}

    def draw(match: re.Match[str]) -> str:
        field, slot = match.group(0), match.group(1)
        if field not in drawn:
            taken = {v for k, v in drawn.items() if _SLOT_RE.fullmatch(k)[1] == slot}
            value = SLOTS[slot](rng)
            for _retry in range(5):
                if value not in taken:
                    break
                value = SLOTS[slot](rng)
            drawn[field] = value
        return drawn[field]

    return _SLOT_RE.sub(draw, template)


def command(label: str, rng: Rng) -> str:
    """One command of the given class, sometimes chained to a less severe companion."""
    text = fill(rng.choice(TEMPLATES[label]), rng)
    if rng.random() >= CHAIN_RATE:
        return text
    rank = LABELS.index(label)
    # Mostly a safe companion; sometimes any class below this one.
    other = "safe" if rng.random() < 0.7 else LABELS[rng.randrange(rank + 1)]
    companion = fill(rng.choice(TEMPLATES[other]), rng)
    sep = rng.choice(SEPARATORS)
    return companion + sep + text if rng.random() < 0.5 else text + sep + companion


def class_counts(n: int) -> dict[str, int]:
    """Exact per-class counts for n samples; rounding slack goes to the largest class."""
    counts = {label: round(n * share) for label, share in SHARES.items()}
    counts["safe"] += n - sum(counts.values())
    return counts


def generate(n: int = 3000, seed: int = 42) -> list[dict[str, str]]:
    """Generate n labelled samples, shuffled, with about NOISE of the labels flipped."""
    rng = random.Random(seed)
    seen: set[str] = set()
    rows: list[dict[str, str]] = []
    for label, count in class_counts(n).items():
        for _ in range(count):
            # Retry a few times on an exact repeat so the corpus stays mostly unique.
            for _attempt in range(4):
                text = command(label, rng)
                if text not in seen:
                    break
            seen.add(text)
            rows.append({"input": text, "label": label})
    rng.shuffle(rows)
    for row in rows:
        if rng.random() < NOISE:
            row["label"] = rng.choice([lab for lab in LABELS if lab != row["label"]])
    return rows


def write_jsonl(rows: list[dict[str, str]], out: Path) -> None:
    """Write rows as JSON lines with a fixed key order and ``\\n`` line endings."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps({"input": row["input"], "label": row["label"]}, ensure_ascii=False))
            fh.write("\n")


def main(argv: list[str] | None = None) -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="number of samples (default 3000)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output .jsonl path")
    args = parser.parse_args(argv)
    rows = generate(args.n, args.seed)
    write_jsonl(rows, args.out)
    print(f"wrote {len(rows)} samples to {args.out}")


if __name__ == "__main__":
    main()
