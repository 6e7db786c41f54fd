#!/usr/bin/env python3
"""The fleet benchmark: one `rpull serve`, three `rpull agent`s and nats-server on this machine,
an origin registry and a pull-through cache (registry proxy mode) in front of it.

Prints, from one run: the `_all` pull of a fresh image to the three agents through the cache
against three sequential `rpull pull`s from the origin (wall time ratio), the bytes of layer
blobs the origin served for the `_all` pull (as a multiple of the image, and its GETs), and the API round
trip of an `_all` job for an image every agent has (median of --jobs). Standard library only.

    bench/fleet.py --rpull target/release/rpull [--size-mb 500] [--jobs 20]
"""

import argparse
import gzip
import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, what, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return
        time.sleep(0.05)
    sys.exit(f"bench/fleet.py: {what} not ready after {timeout}s")


def start_registry(work, name, extra=""):
    port = free_port()
    d = os.path.join(work, name)
    os.makedirs(os.path.join(d, "storage"))
    cfg = os.path.join(d, "config.yml")
    with open(cfg, "w") as f:
        f.write(f"version: 0.1\nlog:\n  level: warn\n  formatter: text\nstorage:\n  filesystem:\n"
                f"    rootdirectory: {d}/storage\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}")
    log = open(os.path.join(d, "registry.log"), "w")
    p = subprocess.Popen(["docker-registry", "serve", cfg], stdout=log, stderr=log)
    wait_for(lambda: probe(port), f"registry {name}")
    return p, port, os.path.join(d, "registry.log")


def probe(port):
    try:
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        c.request("GET", "/v2/")
        return c.getresponse().status == 200
    except OSError:
        return False


def push_image(port, repo, tag, size_mb, seed):
    """One gzip layer of incompressible bytes; returns the layer digest and its size."""
    c = http.client.HTTPConnection("127.0.0.1", port)

    def blob(data):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        c.request("POST", f"/v2/{repo}/blobs/uploads/")
        r = c.getresponse()
        r.read()
        loc = r.getheader("Location")
        path = re.sub(r"^https?://[^/]+", "", loc)
        path += ("&" if "?" in path else "?") + "digest=" + d
        c.request("PUT", path, body=data, headers={"Content-Type": "application/octet-stream"})
        r = c.getresponse()
        r.read()
        assert r.status == 201, r.status
        return d

    data = str(seed).encode() + os.urandom(size_mb * 1024 * 1024)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        info = tarfile.TarInfo("payload")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    raw = buf.getvalue()
    gz = gzip.compress(raw, compresslevel=1, mtime=0)
    layer = blob(gz)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers",
                                    "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
    cd = blob(config)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                      "digest": cd, "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                       "digest": layer, "size": len(gz)}]}).encode()
    c.request("PUT", f"/v2/{repo}/manifests/{tag}", body=manifest,
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"})
    r = c.getresponse()
    r.read()
    assert r.status == 201, r.status
    return layer, len(gz)


def origin_blob_cost(log_path, digest):
    """The GETs of the blob the origin's access log shows, and their body bytes."""
    gets, total = 0, 0
    for line in open(log_path):
        m = re.search(r'"GET /v2/[^ ]*/blobs/' + re.escape(digest) + r' HTTP/1.1" 20[06] (\d+)', line)
        if m:
            gets += 1
            total += int(m.group(1))
    return gets, total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rpull", default="target/release/rpull")
    ap.add_argument("--size-mb", type=int, default=500)
    ap.add_argument("--jobs", type=int, default=20)
    args = ap.parse_args()
    rpull = os.path.abspath(args.rpull)
    work = tempfile.mkdtemp(prefix="rpull-fleet-bench-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    procs = []
    try:
        origin, oport, olog = start_registry(work, "origin")
        procs.append(origin)
        cache, cport, _ = start_registry(work, "cache", f"proxy:\n  remoteurl: http://127.0.0.1:{oport}\n")
        procs.append(cache)
        print(f"pushing a {args.size_mb} MB image (twice: one for the CLI, one for the fleet)…", flush=True)
        cli_layer, layer_size = push_image(oport, "bench/cli", "v1", args.size_mb, 1)
        fleet_layer, _ = push_image(oport, "bench/fleet", "v1", args.size_mb, 2)

        nport = free_port()
        os.makedirs(os.path.join(work, "nats"))
        nlog = open(os.path.join(work, "nats.log"), "w")
        procs.append(subprocess.Popen(["nats-server", "-a", "127.0.0.1", "-p", str(nport), "-js",
                                       "-sd", os.path.join(work, "nats")], stdout=nlog, stderr=nlog))
        wait_for(lambda: "Server is ready" in open(os.path.join(work, "nats.log")).read(), "nats-server")
        nats = f"nats://127.0.0.1:{nport}"
        config = os.path.join(work, "agent.json")
        with open(config, "w") as f:
            json.dump({"mirrors": {f"127.0.0.1:{oport}": [f"http://127.0.0.1:{cport}"]}}, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("RPULL_", "DOCKER_"))}
        for i in range(3):
            root = os.path.join(work, f"agent{i}")
            log = open(root + ".log", "w")
            procs.append(subprocess.Popen([rpull, "--root", root, "agent", "--nats", nats, "--hostname",
                                           f"node{i}", "--config", config], stderr=log, env=env))
            wait_for(lambda: "ready" in open(root + ".log").read(), f"agent {i}")
        key = os.path.join(work, "key")
        with open(key, "w") as f:
            f.write("bench-key\n")
        sport = free_port()
        slog = open(os.path.join(work, "serve.log"), "w")
        procs.append(subprocess.Popen([rpull, "--root", os.path.join(work, "serve"), "serve", "--listen",
                                       f"127.0.0.1:{sport}", "--nats", nats, "--signing-key-file", key,
                                       "--job-timeout", "600s"], stderr=slog, env=env))
        wait_for(lambda: "listening" in open(os.path.join(work, "serve.log")).read(), "rpull serve")
        token = subprocess.check_output([rpull, "token", "--signing-key-file", key, "--sub", "bench",
                                         "--role", "write"]).decode().strip()

        def job(image):
            c = http.client.HTTPConnection("127.0.0.1", sport, timeout=900)
            c.request("POST", "/node/_all/container/docker/pull", body=json.dumps({"image": image}),
                      headers={"Authorization": f"Bearer {token}"})
            r = c.getresponse()
            body = json.loads(r.read())
            assert r.status == 202 and all(x["status"] == "ok" for x in body["results"]), body
            return body

        started = time.time()
        for i in range(3):
            subprocess.run([rpull, "--root", os.path.join(work, f"cli{i}"), "pull", "-q",
                            f"127.0.0.1:{oport}/bench/cli:v1"], check=True, env=env, stdout=subprocess.DEVNULL)
        cli = time.time() - started
        started = time.time()
        job(f"127.0.0.1:{oport}/bench/fleet:v1")
        fleet = time.time() - started
        # The cache finishes storing what it fetched.
        time.sleep(1)
        gets, served = origin_blob_cost(olog, fleet_layer)
        times = []
        for _ in range(args.jobs):
            t = time.time()
            job(f"127.0.0.1:{oport}/bench/fleet:v1")
            times.append(time.time() - t)
        print(f"three sequential rpull pull from the origin: {cli:.2f} s")
        print(f"_all to three agents through the cache:       {fleet:.2f} s ({fleet / cli:.2f}x)")
        print(f"origin layer bytes for the _all pull:         {served} ({served / layer_size:.2f}x the layer, "
              f"{gets} GETs)")
        print(f"_all round trip, up-to-date image, 3 agents:  median {statistics.median(times) * 1000:.1f} ms "
              f"(min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f}, {args.jobs} jobs)")
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
