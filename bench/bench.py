#!/usr/bin/env python3
"""The pull benchmark driven by bench/run: builds test images from this machine's /usr, pushes
them to a real distribution registry on loopback, and times rpull against its peers.

Every figure of a run comes from the same machine in the same minutes, and the table shows
ratios rpull/peer: the 2-core CI machines are shared and noisy, absolute seconds mean little.
Standard library only.
"""

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

CHUNK = 1 << 20
TIME = "/usr/bin/time"


def log(msg):
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Building the images


def usr_entries(roots):
    """Sorted (path, size) of every directory, file and symlink under `roots`, one filesystem."""
    out = []
    for root in roots:
        dev = os.lstat(root).st_dev
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            kept = []
            for d in dirnames:
                p = os.path.join(dirpath, d)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if st.st_dev == dev and not os.path.islink(p):
                    kept.append(d)
                out.append((p, 0))
            dirnames[:] = kept
            for f in sorted(filenames):
                p = os.path.join(dirpath, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                if not os.access(p, os.R_OK) and not os.path.islink(p):
                    continue
                out.append((p, st.st_size if os.path.isfile(p) and not os.path.islink(p) else 0))
    return out


def split_layers(entries, raw_total, parts):
    """Consecutive slices of `entries` up to raw_total bytes: `parts` layers of about equal size."""
    per = raw_total / parts
    layers, cur, size, total = [], [], 0, 0
    for p, s in entries:
        cur.append(p)
        size += s
        total += s
        if size >= per:
            layers.append(cur)
            cur, size = [], 0
            if len(layers) == parts:
                break
    if cur and len(layers) < parts:
        layers.append(cur)
    return layers


def build_layer(paths, out_dir, name, comps):
    """tar of `paths` (GNU tar, no recursion), compressed with each of `comps` in one pass.
    Returns {comp: (file, digest, size)} and the diff_id."""
    lst = os.path.join(out_dir, f"{name}.list")
    with open(lst, "w") as f:
        for p in paths:
            f.write(p.lstrip("/") + "\n")
    tar = subprocess.Popen(
        ["tar", "-C", "/", "-cf", "-", "--no-recursion", "--ignore-failed-read", "--warning=none",
         "-T", lst],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    paths = {c: os.path.join(out_dir, f"{name}.{c}") for c in comps}
    compressors = {"gzip": ["gzip", "-6", "-n"], "zstd": ["zstd", "-3", "-q", "-T1"]}
    diff_id = compress_tar(tar, {paths[c]: compressors[c] for c in comps})
    os.unlink(lst)
    return {c: (path, file_digest(path), os.path.getsize(path)) for c, path in paths.items()}, diff_id


def compress_tar(tar, outputs):
    """Feeds the tar stream of the process `tar` to one compressor per output ({path: argv}),
    in one pass, and waits for them all. Returns the tar's digest (the layer's diff_id)."""
    procs = []
    for path, cmd in outputs.items():
        fout = open(path, "wb")
        procs.append((subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fout), fout))
    h = hashlib.sha256()
    while True:
        b = tar.stdout.read(CHUNK)
        if not b:
            break
        h.update(b)
        for p, _ in procs:
            p.stdin.write(b)
    tar.wait()
    for p, fout in procs:
        p.stdin.close()
        p.wait()
        fout.close()
    return "sha256:" + h.hexdigest()


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(CHUNK)
            if not b:
                break
            h.update(b)
    return "sha256:" + h.hexdigest()


MEDIA = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


def image_meta(layers, run_config, history):
    """An image of `layers` ({path, digest, size, diff_id}) for linux/amd64 with the container
    config `run_config` and one history entry per layer: {layers, config (the JSON text)}."""
    config = {
        "architecture": "amd64", "os": "linux",
        "config": run_config,
        "rootfs": {"type": "layers", "diff_ids": [l["diff_id"] for l in layers]},
        "history": [{"created_by": h} for h in history],
    }
    return {"layers": layers, "config": json.dumps(config, sort_keys=True)}


def build_image(cache, kind, raw_total, parts, small_part, comps):
    """Builds (or reuses from `cache`) the layers of one image; returns {comp: image dict}."""
    d = os.path.join(cache, f"{kind}-{raw_total / 1e6:.0f}MB")
    meta_path = os.path.join(d, "image.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if all(c in meta for c in comps):
            log(f"reusing {kind} image from {d}")
            return meta
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    log(f"building the {kind} image from /usr ({raw_total / 1e6:.0f} MB of files, {parts} layer(s)"
        f"{' + 1 small' if small_part else ''}, {'+'.join(comps)})")
    entries = usr_entries(["/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec", "/usr/include",
                           "/usr/sbin", "/usr/local"])
    if kind == "small":
        # A different slice than the big image's start, so the two images share no layer.
        entries = entries[len(entries) // 3:]
    layers = split_layers(entries, raw_total, parts)
    if small_part:
        layers.append(layers[-1][-1:] + [p for p, _ in usr_entries(["/usr/share/doc"])][:2000])
    results = [None] * len(layers)

    def work(i):
        results[i] = build_layer(layers[i], d, f"layer{i}", comps)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(layers))]
    # Two at a time: the machine has 2 cores.
    for i in range(0, len(threads), 2):
        for t in threads[i:i + 2]:
            t.start()
        for t in threads[i:i + 2]:
            t.join()
    meta = {}
    for c in comps:
        lays = [{"path": r[0][c][0], "digest": r[0][c][1], "size": r[0][c][2], "diff_id": r[1]}
                for r in results]
        meta[c] = image_meta(lays, {"Env": ["PATH=/usr/bin"], "Cmd": ["/bin/sh"]},
                             [f"bench layer {i}" for i in range(len(lays))])
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return meta


# ----------------------------------------------------------------------------------------------
# The registry


def stop_group(proc):
    """Sends SIGTERM to the process group `proc` leads (started with start_new_session) and
    waits for `proc`."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    proc.wait()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Registry:
    def __init__(self, binary, workdir):
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        storage = os.path.join(workdir, "registry")
        os.makedirs(storage, exist_ok=True)
        cfg = os.path.join(workdir, "registry.yml")
        with open(cfg, "w") as f:
            f.write(f"""version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: "{storage}"
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: "{self.host}"
  secret: "rpull-bench"
""")
        self.logf = open(os.path.join(workdir, "registry.log"), "w")
        self.proc = subprocess.Popen([binary, "serve", cfg], stdout=self.logf, stderr=self.logf,
                                     start_new_session=True)
        deadline = time.time() + 20
        while True:
            try:
                if self.request("GET", "/v2/")[0] == 200:
                    break
            except OSError:
                pass
            if self.proc.poll() is not None or time.time() > deadline:
                raise SystemExit(f"registry did not start; see {workdir}/registry.log")
            time.sleep(0.05)
        log(f"registry {binary} listening on {self.host}")

    def request(self, method, path, body=None, headers=None, length=None):
        conn = http.client.HTTPConnection(self.host, timeout=600)
        h = dict(headers or {})
        if length is not None:
            h["Content-Length"] = str(length)
        conn.request(method, path, body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r.status, r.getheader("Location"), data

    def push_blob(self, repo, digest, path=None, data=None):
        if self.request("HEAD", f"/v2/{repo}/blobs/{digest}")[0] == 200:
            return
        st, loc, _ = self.request("POST", f"/v2/{repo}/blobs/uploads/")
        assert st == 202, st
        u = urllib.parse.urlsplit(loc)
        q = (u.query + "&" if u.query else "") + "digest=" + urllib.parse.quote(digest)
        if path:
            with open(path, "rb") as f:
                st = self.request("PUT", f"{u.path}?{q}", body=f, length=os.path.getsize(path),
                                  headers={"Content-Type": "application/octet-stream"})[0]
        else:
            st = self.request("PUT", f"{u.path}?{q}", body=data, length=len(data),
                              headers={"Content-Type": "application/octet-stream"})[0]
        assert st == 201, f"PUT blob {digest}: {st}"

    def push_image(self, repo, tag, image, comp):
        config = image["config"].encode()
        cdig = "sha256:" + hashlib.sha256(config).hexdigest()
        for l in image["layers"]:
            self.push_blob(repo, l["digest"], path=l["path"])
        self.push_blob(repo, cdig, data=config)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                       "size": len(config)},
            "layers": [{"mediaType": MEDIA[comp], "digest": l["digest"], "size": l["size"]}
                       for l in image["layers"]],
        }
        body = json.dumps(manifest).encode()
        st = self.request("PUT", f"/v2/{repo}/manifests/{tag}", body=body, length=len(body),
                          headers={"Content-Type": manifest["mediaType"]})[0]
        assert st == 201, f"PUT manifest: {st}"

    def stop(self):
        stop_group(self.proc)


# ----------------------------------------------------------------------------------------------
# Timing


def run_once(cmd, env=None):
    """Runs `cmd` (argv) under GNU time; returns wall seconds, user+sys CPU of it and its
    descendants, and the peak RSS in MiB of its largest process. GNU time (a small process) forks
    the command, so the peak RSS is not inflated by this Python process's own memory."""
    with tempfile.NamedTemporaryFile("r", prefix="rpull-bench-time-") as out:
        t0 = time.perf_counter()
        p = subprocess.run([TIME, "-q", "-f", "%U %S %M", "-o", out.name, *cmd], env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"command failed ({p.returncode}): {' '.join(cmd)}\n"
                             f"{p.stderr.decode(errors='replace')[-2000:]}")
        user, sys_, rss_kb = out.read().split()[-3:]
    return wall, float(user) + float(sys_), int(rss_kb) / 1024.0


def timed(name, cmd, runs, prep=None, env=None):
    return timed_alternating([(name, cmd, prep)], runs, env)[0]


def timed_alternating(specs, runs, env=None):
    """Runs each `(name, cmd, prep)` of `specs` once per round, for `runs` rounds, so that rows
    compared with each other sample the same minutes of a machine whose load drifts. Each row
    gets `wall_samples` in round order; `paired_ratio` (on every row after the first) is the
    median over rounds of its wall time divided by the first row's in the same round."""
    samples = {name: [] for name, _, _ in specs}
    for _ in range(runs):
        for name, cmd, prep in specs:
            if prep:
                prep()
            subprocess.run(["sync"], check=False)
            samples[name].append(run_once(cmd, env))
    rows = []
    for name, _, _ in specs:
        got = samples[name]
        med = lambda i: statistics.median(s[i] for s in got)
        r = {"tool": name, "runs": runs, "wall": med(0), "cpu": med(1),
             "rss_mib": max(s[2] for s in got), "wall_samples": [round(s[0], 4) for s in got]}
        if rows:
            first = samples[specs[0][0]]
            r["paired_ratio"] = statistics.median(a[0] / b[0] for a, b in zip(got, first))
        log(f"  {name:<28} wall {r['wall']:7.3f}s  cpu {r['cpu']:7.3f}s  rss {r['rss_mib']:6.1f} MiB"
            + (f"  / {specs[0][0]}, per round: {r['paired_ratio']:.3f}" if "paired_ratio" in r else ""))
        rows.append(r)
    return rows


def wipe(path):
    def f():
        shutil.rmtree(path, ignore_errors=True)
    return f


def peer_pulls(ref, runs, roots):
    """Cold `podman pull` and `docker pull` of `ref`, when installed and usable. podman gets a
    store of its own under each `(fs, dir)` of `roots`, as rpull does, emptied before each run
    (`system reset`, then the directory removed); docker has its daemon's one store, emptied
    with `rmi`."""
    rows = []
    for tool in ("podman", "docker"):
        exe = shutil.which(tool)
        if not exe:
            continue
        if subprocess.run([exe, "info"], capture_output=True).returncode != 0:
            log(f"  {tool} is installed but not usable (no engine); skipped")
            continue
        if tool == "docker":
            prep = lambda: subprocess.run([exe, "rmi", "-f", ref], capture_output=True)
            rows.append(timed("docker pull", [exe, "pull", "-q", ref], runs, prep=prep))
            continue
        for fs, root in roots:
            store = [f"--root={root}/storage", f"--runroot={root}/run", "--storage-driver=overlay"]

            def prep(store=store, root=root):
                if os.path.isdir(root):
                    subprocess.run([exe, *store, "system", "reset", "-f"], capture_output=True)
                shutil.rmtree(root, ignore_errors=True)

            cmd = [exe, *store, "pull", "-q", "--tls-verify=false", ref]
            rows.append(timed(f"podman pull ({fs})", cmd, runs, prep=prep))
            prep()
    return rows


def curl_tar_script(path, registry, repo, tag, image, comp, dest, parallel):
    """The naive baseline: manifest, config, then each blob `curl | tar -x` into its own dir."""
    base = f"http://{registry.host}/v2/{repo}"
    acc = "application/vnd.oci.image.manifest.v1+json"
    untar = "tar -xzf -" if comp == "gzip" else "tar --zstd -xf -"
    lines = ["#!/bin/sh", "set -e", f"mkdir -p {dest}",
             f"curl -sf -H 'Accept: {acc}' {base}/manifests/{tag} > {dest}/manifest.json"]
    cdig = "sha256:" + hashlib.sha256(image["config"].encode()).hexdigest()
    lines.append(f"curl -sf {base}/blobs/{cdig} > {dest}/config.json")
    for i, l in enumerate(image["layers"]):
        cmd = f"mkdir -p {dest}/{i} && curl -sf {base}/blobs/{l['digest']} | {untar} -C {dest}/{i}"
        lines.append(f"( {cmd} ) &" if parallel else cmd)
        if parallel and i % parallel == parallel - 1:
            lines.append("wait")
    if parallel:
        lines.append("wait")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(path, 0o755)


def bench_image(args, registry, label, repo, image, comp, work):
    tag = "latest"
    ref = f"{registry.host}/{repo}:{tag}"
    blob_bytes = sum(l["size"] for l in image["layers"])
    log(f"{label}: {len(image['layers'])} layer(s), {blob_bytes / 1e6:.1f} MB {comp}")
    rows = []
    root = os.path.join(work, "rpull-root")
    rpull = [args.rpull, "pull", "-q", "--root", root, ref]
    env = dict(os.environ, HOME=work, DOCKER_CONFIG=os.path.join(work, "docker-config"))
    os.makedirs(env["DOCKER_CONFIG"], exist_ok=True)
    # Before issue 15 every blob was one stream: the same pull with ranged downloads off, run
    # in alternation with the default so that both see the same load.
    one = [args.rpull, "pull", "-q", "--connections-per-blob", "1", "--root", root, ref]
    cold, cold_one = timed_alternating([("rpull cold", rpull, wipe(root)),
                                        ("rpull cold, one stream per blob", one, wipe(root))],
                                       args.runs, env=env)
    rows.append(cold)
    rows.append(timed("rpull warm", rpull, args.runs, env=env))
    rows.append(cold_one)
    shutil.rmtree(root, ignore_errors=True)
    if args.rpull_only:
        return {"image": label, "compression": comp, "layers": len(image["layers"]),
                "blob_bytes": blob_bytes, "rows": rows}
    dest = os.path.join(work, "curl-tar")
    for par, name in ((0, "curl|tar sequential"), (3, "curl|tar 3 parallel")):
        script = os.path.join(work, f"curl-tar-{par}.sh")
        curl_tar_script(script, registry, repo, tag, image, comp, dest, par)
        rows.append(timed(name, ["/bin/sh", script], args.runs, prep=wipe(dest)))
    shutil.rmtree(dest, ignore_errors=True)
    if args.skopeo:
        oci = os.path.join(work, "skopeo-oci")
        sk = [args.skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{ref}", f"oci:{oci}:{tag}"]
        rows.append(timed("skopeo copy (no unpack)", sk, args.runs, prep=wipe(oci)))
        rows.append(timed("skopeo copy warm", sk, args.runs))
        shutil.rmtree(oci, ignore_errors=True)
    rows += peer_pulls(ref, args.runs, [(fs_type(work), os.path.join(work, "podman"))])
    return {"image": label, "compression": comp, "layers": len(image["layers"]),
            "blob_bytes": blob_bytes, "rows": rows}


def step_costs(args, image, work):
    out = os.path.join(work, "stepcost")
    os.makedirs(out, exist_ok=True)
    p = subprocess.run([args.stepcost, out] + [l["path"] for l in image["layers"]],
                       capture_output=True, text=True, check=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(p.stdout)


# ----------------------------------------------------------------------------------------------
# The far registry: the same registry behind bench/shaper (added RTT, per-connection cap)


def build_far_image(cache, mb):
    """One layer of `mb` MB of random bytes (so the blob is about that size), gzip -1."""
    d = os.path.join(cache, f"far-{mb}MB")
    meta_path = os.path.join(d, "image.json")
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            log(f"reusing the far image from {d}")
            return json.load(f)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(os.path.join(d, "tree", "data"))
    log(f"building the far image: one layer of {mb} MB of random bytes, gzip -1")
    with open(os.path.join(d, "tree", "data", "random.bin"), "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    tar = subprocess.Popen(["tar", "-C", os.path.join(d, "tree"), "-cf", "-", "data"],
                           stdout=subprocess.PIPE)
    path = os.path.join(d, "layer0.gzip")
    diff_id = compress_tar(tar, {path: ["gzip", "-1", "-n"]})
    shutil.rmtree(os.path.join(d, "tree"))
    lay = {"path": path, "digest": file_digest(path), "size": os.path.getsize(path),
           "diff_id": diff_id}
    meta = image_meta([lay], {"Cmd": ["/bin/sh"]}, ["bench far layer"])
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    return meta


class Shaper:
    def __init__(self, binary, backend, rtt_ms, rate, workdir):
        self.stats = os.path.join(workdir, "shaper-stats")
        open(self.stats, "w").close()
        self.proc = subprocess.Popen([binary, "127.0.0.1:0", backend, str(rtt_ms), str(rate),
                                      self.stats], stdout=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.host = self.proc.stdout.readline().strip()
        log(f"shaper on {self.host}: +{rtt_ms} ms RTT, {rate / 1e6:.0f} MB/s per connection")

    def reset(self):
        open(self.stats, "w").close()

    def bytes_down(self):
        time.sleep(1.0)  # connections of a finished process are counted when the shaper sees them end
        with open(self.stats) as f:
            return sum(int(l) for l in f if l.strip())

    def stop(self):
        stop_group(self.proc)


def fs_type(path):
    """The filesystem of `path` as mount names it (`stat -f` says ext2/ext3 for ext4)."""
    p = subprocess.run(["findmnt", "-no", "FSTYPE", "-T", path], capture_output=True, text=True)
    if p.returncode != 0 or not p.stdout.strip():
        p = subprocess.run(["stat", "-f", "-c", "%T", path], capture_output=True, text=True)
    return p.stdout.strip().splitlines()[0] if p.stdout.strip() else "?"


def bench_far(args, shaper, label, repo, image, comp, work, interrupted):
    ref = f"{shaper.host}/{repo}:latest"
    blob_bytes = sum(l["size"] for l in image["layers"])
    log(f"far: {label}: {len(image['layers'])} layer(s), {blob_bytes / 1e6:.1f} MB {comp}")
    env = dict(os.environ, HOME=work, DOCKER_CONFIG=os.path.join(work, "docker-config"))
    os.makedirs(env["DOCKER_CONFIG"], exist_ok=True)
    rows = []
    # The baseline: each blob downloaded by curl over one connection, one after the other,
    # no unpack and no check (what docker and podman do per layer, minus their unpacking).
    base = f"http://{shaper.host}/v2/{repo}/blobs"
    script = os.path.join(work, "curl-far.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nset -e\n" + "".join(
            f"curl -sf -o /dev/null {base}/{l['digest']}\n" for l in image["layers"]))
    rows.append(timed("curl, one connection per blob (no unpack)", ["/bin/sh", script], args.runs))
    roots = [(fs_type(work), os.path.join(work, "far-root"))]
    if args.ext4_dir:
        os.makedirs(args.ext4_dir, exist_ok=True)
        roots.append((fs_type(args.ext4_dir), os.path.join(args.ext4_dir, "far-root")))
    for i, (fs, root) in enumerate(roots):
        cmd = [args.rpull, "pull", "-q", "--root", root, ref]
        rows.append(timed(f"rpull cold ({fs})", cmd, args.runs, prep=wipe(root), env=env))
        if i == 0:
            # rpull before issue 15 (and docker, podman): each blob over one connection.
            one = [args.rpull, "pull", "-q", "--connections-per-blob", "1", "--root", root, ref]
            rows.append(timed(f"rpull cold, one stream per blob ({fs})", one, args.runs,
                              prep=wipe(root), env=env))
        shutil.rmtree(root, ignore_errors=True)
    rows += peer_pulls(ref, args.runs, [(fs, os.path.join(os.path.dirname(root), "podman"))
                                         for fs, root in roots])
    res = {"image": f"far: {label}", "compression": comp, "layers": len(image["layers"]),
           "blob_bytes": blob_bytes, "rows": rows, "far": True}
    if interrupted:
        # SIGKILL half-way through a cold pull, then the re-run: bytes the shaper delivered.
        cold = next(r for r in rows if r["tool"].startswith("rpull cold ("))
        root = os.path.join(work, "far-root")
        shutil.rmtree(root, ignore_errors=True)
        shaper.reset()
        cmd = [args.rpull, "pull", "-q", "--root", root, ref]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(cold["wall"] / 2)
        p.send_signal(signal.SIGKILL)
        p.wait()
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        fetched = shaper.bytes_down()
        shutil.rmtree(root, ignore_errors=True)
        res["interrupted"] = {"bytes_fetched": fetched, "ratio": fetched / blob_bytes,
                              "killed_after_s": round(cold["wall"] / 2, 3)}
        log(f"  interrupted + re-run: {fetched / 1e6:.1f} MB for {blob_bytes / 1e6:.1f} MB of blobs"
            f" ({fetched / blob_bytes:.3f}x)")
    return res


def print_far(results):
    for res in results:
        rows = res["rows"]
        curl = rows[0]
        mb = res["blob_bytes"] / 1e6
        print(f"\n## {res['image']} — {res['layers']} layer(s), {mb:.1f} MB {res['compression']}"
              f" (median of {curl['runs']} runs)\n")
        print("| tool | wall s | CPU s | peak RSS MiB | tool / curl (wall) |")
        print("|---|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['tool']} | {r['wall']:.3f} | {r['cpu']:.3f} | {r['rss_mib']:.1f} | "
                  f"{ratio(r['wall'], curl['wall']):.2f} |")
        for r in rows:
            if r["tool"].startswith("rpull cold ("):
                print(f"\n{r['tool']}: {ratio(curl['wall'], r['wall']):.2f}x faster than one curl"
                      " connection per blob")
        if "interrupted" in res:
            i = res["interrupted"]
            print(f"interrupted (SIGKILL after {i['killed_after_s']} s) + re-run: "
                  f"{i['bytes_fetched'] / 1e6:.1f} MB fetched, {i['ratio']:.3f}x the blobs")


def ratio(a, b):
    return a / b if b else float("nan")


def print_table(results):
    for res in results:
        rows = {r["tool"]: r for r in res["rows"]}
        cold = rows["rpull cold"]
        mb = res["blob_bytes"] / 1e6
        print(f"\n## {res['image']} — {res['layers']} layer(s), {mb:.1f} MB {res['compression']}"
              f" (median of {cold['runs']} runs)\n")
        print("| tool | wall s | CPU s | peak RSS MiB | rpull cold / tool (wall) | (CPU) |")
        print("|---|---:|---:|---:|---:|---:|")
        for r in res["rows"]:
            print(f"| {r['tool'].replace('|', chr(92) + '|')} | {r['wall']:.3f} | {r['cpu']:.3f} | {r['rss_mib']:.1f} | "
                  f"{ratio(cold['wall'], r['wall']):.2f} | {ratio(cold['cpu'], r['cpu']):.2f} |")
        sc = res.get("stepcost")
        if sc:
            steps = ", ".join(f"{k} {v['cpu']:.2f}" for k, v in sc["steps"].items())
            print(f"\nCPU per compressed MB: rpull cold {1000 * cold['cpu'] / mb:.2f} ms/MB; "
                  f"sum of the steps alone {1000 * sc['cpu_total'] / mb:.2f} ms/MB ({steps} s); "
                  f"ratio {ratio(cold['cpu'], sc['cpu_total']):.2f}")
        warm = rows["rpull warm"]
        print(f"warm re-pull: {1000 * warm['wall']:.1f} ms wall", end="")
        if "curl|tar sequential" in rows:
            print(f"; cold pull vs curl|tar sequential "
                  f"{ratio(cold['wall'], rows['curl|tar sequential']['wall']):.2f}x, vs 3 parallel "
                  f"{ratio(cold['wall'], rows['curl|tar 3 parallel']['wall']):.2f}x", end="")
        print()


def targets(results):
    """The issue's targets, checked on the first (largest) image of the run."""
    res = results[0]
    rows = {r["tool"]: r for r in res["rows"]}
    cold, warm = rows["rpull cold"], rows["rpull warm"]
    one = rows["rpull cold, one stream per blob"]
    rss = [r for x in results for r in x["rows"] if r["tool"] == "rpull cold"]
    out = [
        ("loopback: cold pull / the same with one stream per blob (wall medians)",
         ratio(cold["wall"], one["wall"]), "<= 1.05"),
        ("loopback: the same, median of the per-round ratios (alternating runs)",
         1 / one["paired_ratio"], "<= 1.05"),
    ]
    if "curl|tar sequential" in rows:
        seq, par = rows["curl|tar sequential"], rows["curl|tar 3 parallel"]
        out += [("cold pull / curl|tar sequential (wall)", ratio(cold["wall"], seq["wall"]), "<= 0.6"),
                ("cold pull / curl|tar 3 parallel (wall)", ratio(cold["wall"], par["wall"]), "<= 0.6")]
    out += [
        ("warm re-pull wall ms", 1000 * warm["wall"], "< 30"),
        ("peak RSS MiB, largest over images", max(r["rss_mib"] for r in rss), "< 40"),
        ("peak RSS MiB, per image", " / ".join(f"{r['rss_mib']:.1f}" for r in rss), "flat"),
    ]
    if res.get("stepcost"):
        out.append(("CPU / sum of step costs", ratio(cold["cpu"], res["stepcost"]["cpu_total"]), "<= 1.3"))
    return res["image"], out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpull", required=True)
    ap.add_argument("--stepcost")
    ap.add_argument("--registry-bin", default=shutil.which("docker-registry") or "/usr/bin/docker-registry")
    ap.add_argument("--skopeo", default=shutil.which("skopeo"))
    ap.add_argument("--work", help="scratch directory (default: under /dev/shm when it has room)")
    ap.add_argument("--cache", help="where built images are kept between runs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--rpull-only", action="store_true",
                    help="only rpull's own loopback rows (cold with ranges on and off, warm): "
                         "no peers, no far condition")
    ap.add_argument("--quick", action="store_true", help="only the one-layer ~50 MB image")
    ap.add_argument("--json")
    ap.add_argument("--shaper", help="bench/shaper binary: adds the far-registry condition")
    ap.add_argument("--far-only", action="store_true", help="only the far-registry condition")
    ap.add_argument("--far-mb", type=int, default=1000, help="size of the far one-layer image")
    ap.add_argument("--rtt-ms", type=int, default=40)
    ap.add_argument("--rate", type=int, default=25_000_000, help="bytes/s per connection")
    ap.add_argument("--ext4-dir", default=os.path.join(os.path.expanduser("~"), ".cache",
                                                       "rpull-bench", "ext4-work"),
                    help="a directory on the root ext4, for the far pulls' second row ('' to skip)")
    args = ap.parse_args()

    shm_free = shutil.disk_usage("/dev/shm").free if os.path.isdir("/dev/shm") else 0
    parent = "/dev/shm" if shm_free > (4 << 30 if args.quick else 10 << 30) else None
    work = args.work or tempfile.mkdtemp(prefix="rpull-bench-", dir=parent)
    os.makedirs(work, exist_ok=True)
    cache = args.cache or os.path.join(os.path.expanduser("~"), ".cache", "rpull-bench")
    os.makedirs(cache, exist_ok=True)
    log(f"scratch {work}, image cache {cache}")

    small = build_image(cache, "small", 62e6, 1, False, ["gzip", "zstd"])
    images = [("one-layer ~50 MB (gzip)", "bench/small", small["gzip"], "gzip"),
              ("one-layer ~50 MB (zstd)", "bench/small-zstd", small["zstd"], "zstd")]
    if not args.quick:
        big = build_image(cache, "big", 1.65e9, 4, True, ["gzip", "zstd"])
        images = [("5 layers ~500 MB (gzip)", "bench/big", big["gzip"], "gzip"),
                  ("5 layers ~500 MB (zstd)", "bench/big-zstd", big["zstd"], "zstd")] + images
    far_images = []
    if args.shaper and not args.rpull_only:
        far = build_far_image(cache, args.far_mb)
        far_images.append((f"one layer ~{args.far_mb} MB (gzip)", "bench/far", far, "gzip", True))
        if not args.quick:
            big = build_image(cache, "big", 1.65e9, 4, True, ["gzip", "zstd"])
            far_images.append(("5 layers ~500 MB (gzip)", "bench/big", big["gzip"], "gzip", False))
    if args.far_only:
        images = []
    registry = Registry(args.registry_bin, work)
    results, far_results = [], []
    shaper = None
    try:
        for label, repo, image, comp in images:
            registry.push_image(repo, "latest", image, comp)
        for label, repo, image, comp, _ in far_images:
            registry.push_image(repo, "latest", image, comp)
        for label, repo, image, comp in images:
            res = bench_image(args, registry, label, repo, image, comp, work)
            if args.stepcost:
                res["stepcost"] = step_costs(args, image, work)
            results.append(res)
        if far_images:
            shaper = Shaper(args.shaper, registry.host, args.rtt_ms, args.rate, work)
            for label, repo, image, comp, interrupted in far_images:
                far_results.append(bench_far(args, shaper, label, repo, image, comp, work,
                                             interrupted))
    finally:
        if shaper:
            shaper.stop()
        registry.stop()
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
        if args.ext4_dir:
            shutil.rmtree(os.path.join(args.ext4_dir, "far-root"), ignore_errors=True)
    tg = []
    if results:
        print_table(results)
        image, tg = targets(results)
        print(f"\n## Targets (on {image}; RSS over all images)\n")
        print("| target | measured | goal |")
        print("|---|---:|---|")
        for name, v, goal in tg:
            print(f"| {name.replace('|', chr(92) + '|')} | {v if isinstance(v, str) else f'{v:.2f}'} | {goal} |")
    if far_results:
        print(f"\n# Far registry: +{args.rtt_ms} ms RTT, {args.rate / 1e6:.0f} MB/s per connection"
              " (bench/shaper)")
        print_far(far_results)
    results = results + far_results
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": {"cpus": os.cpu_count(), "kernel": os.uname().release},
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "results": results,
                       "targets": [{"target": n, "measured": v, "goal": g} for n, v, g in tg]},
                      f, indent=2)
        log(f"wrote {args.json}")


if __name__ == "__main__":
    main()
