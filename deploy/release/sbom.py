#!/usr/bin/env python3
"""The image's SBOM (CycloneDX 1.5 JSON), from the image archive itself and the binary's
embedded dependency list; deterministic (same inputs, same bytes).

    deploy/release/sbom.py --image IMAGE.tar --lock Cargo.lock --metadata METADATA.json \
        --version V --digest DIGEST --timestamp T --out SBOM.json

What it lists:
- the operator (metadata.component) and every crate linked into its binary: the
  packages of the binary's `.dep-v0` section (cargo auditable's format, see
  src/build_info.rs) that are not of kind "build", i.e. the crates cargo compiles into
  the binary for this target with these features; build scripts, proc macros and
  dev-dependencies are not in the image and not listed. Each has its purl, its licence
  (from `cargo metadata`) and, from Cargo.lock, the SHA-256 of its .crate file;
- every file of the image's filesystem (type "file", SHA-256), and the Debian packages
  that own the system files (glibc, libgcc) as this build host's dpkg reports them.
"""

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile
import uuid
import zlib

BINARY = "usr/local/bin/vultr-iam-operator"


def read_lock(path):
    """{(name, version): checksum} of the registry packages in Cargo.lock."""
    sums, current = {}, {}
    for line in open(path, encoding="utf-8").read().splitlines() + ["[[package]]"]:
        if line.strip() == "[[package]]":
            if "name" in current and "checksum" in current:
                sums[(current["name"], current["version"])] = current["checksum"]
            current = {}
            continue
        m = re.match(r'^(name|version|checksum) = "(.*)"$', line)
        if m:
            current[m.group(1)] = m.group(2)
    return sums


def elf_section(data, wanted):
    """The bytes of section `wanted` of a 64-bit little-endian ELF file."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise SystemExit("the image's binary is not a 64-bit little-endian ELF file")
    shoff = int.from_bytes(data[0x28:0x30], "little")
    shentsize = int.from_bytes(data[0x3A:0x3C], "little")
    shnum = int.from_bytes(data[0x3C:0x3E], "little")
    shstrndx = int.from_bytes(data[0x3E:0x40], "little")

    def header(i):
        h = data[shoff + i * shentsize: shoff + (i + 1) * shentsize]
        return (int.from_bytes(h[0:4], "little"), int.from_bytes(h[0x18:0x20], "little"),
                int.from_bytes(h[0x20:0x28], "little"))

    _, stroff, _ = header(shstrndx)
    for i in range(shnum):
        name_off, off, size = header(i)
        end = data.index(b"\0", stroff + name_off)
        if data[stroff + name_off:end].decode() == wanted:
            return data[off:off + size]
    raise SystemExit(f"the image's binary has no {wanted} section")


def image_files(path):
    """{path: bytes} of the regular files in the image's layers (docker-archive)."""
    files = {}
    with tarfile.open(path) as archive:
        manifest = json.load(archive.extractfile("manifest.json"))
        for layer in manifest[0]["Layers"]:
            with tarfile.open(fileobj=io.BytesIO(archive.extractfile(layer).read())) as fs:
                for member in fs.getmembers():
                    if member.isfile():
                        files[member.name.lstrip("./")] = fs.extractfile(member).read()
    return files


def debian_package(path):
    """(package, version, architecture) owning /path on this host, or None."""
    try:
        owner = subprocess.run(["dpkg-query", "-S", "/" + path], capture_output=True, text=True)
        if owner.returncode != 0:
            return None
        package = owner.stdout.split(":", 1)[0].strip()
        info = subprocess.run(["dpkg-query", "-W", "-f", "${Package} ${Version} ${Architecture}", package],
                              capture_output=True, text=True, check=True)
        name, version, arch = info.stdout.split()
        return name, version, arch
    except (OSError, subprocess.CalledProcessError, ValueError):
        return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--image", required=True)
    parser.add_argument("--lock", required=True)
    parser.add_argument("--metadata", required=True, help="`cargo metadata --format-version 1` output")
    parser.add_argument("--version", required=True)
    parser.add_argument("--digest", required=True)
    parser.add_argument("--timestamp", required=True, help="ISO 8601, the commit's time")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    files = image_files(args.image)
    if BINARY not in files:
        raise SystemExit(f"no /{BINARY} in {args.image}")
    deps = json.loads(zlib.decompress(elf_section(files[BINARY], ".dep-v0")))["packages"]
    sums = read_lock(args.lock)
    with open(args.metadata, encoding="utf-8") as f:
        licenses = {(p["name"], p["version"]): p.get("license") for p in json.load(f)["packages"]}

    def purl(p):
        return f"pkg:cargo/{p['name']}@{p['version']}"

    root = next(p for p in deps if p.get("root"))
    linked = [p for p in deps if p.get("kind", "runtime") == "runtime" and not p.get("root")]
    components, refs = [], {}
    for p in sorted(linked, key=lambda p: (p["name"], p["version"])):
        ref = purl(p)
        refs[id(p)] = ref
        c = {"type": "library", "bom-ref": ref, "name": p["name"], "version": p["version"],
             "purl": ref, "scope": "required"}
        checksum = sums.get((p["name"], p["version"]))
        if checksum:
            c["hashes"] = [{"alg": "SHA-256", "content": checksum}]
        license = licenses.get((p["name"], p["version"]))
        if license:
            c["licenses"] = [{"expression": license.replace("/", " OR ")}]
        c["properties"] = [{"name": "cargo:source", "value": p["source"]}]
        components.append(c)
    root_ref = purl(root)
    refs[id(root)] = root_ref

    debs = {}
    for path in sorted(files):
        data = files[path]
        owner = debian_package(path) if path != BINARY else None
        c = {"type": "file", "bom-ref": f"file:/{path}", "name": f"/{path}",
             "hashes": [{"alg": "SHA-256", "content": hashlib.sha256(data).hexdigest()}]}
        if path == BINARY:
            c["properties"] = [{"name": "component", "value": root_ref}]
        if owner:
            name, version, arch = owner
            deb = f"pkg:deb/debian/{name}@{version}?arch={arch}"
            debs[deb] = {"type": "library", "bom-ref": deb, "name": name, "version": version,
                         "purl": deb, "properties": [{"name": "source", "value": "the build host's dpkg"}]}
            c["properties"] = [{"name": "debian:package", "value": deb}]
        components.append(c)
    components.extend(debs[k] for k in sorted(debs))

    index = {i: p for i, p in enumerate(deps)}
    dependencies = []
    for p in [root] + sorted(linked, key=lambda p: (p["name"], p["version"])):
        on = sorted(refs[id(index[d])] for d in p.get("dependencies", []) if id(index[d]) in refs)
        dependencies.append({"ref": refs[id(p)], "dependsOn": on})

    image_ref = f"pkg:oci/vultr-iam-operator@{args.digest.replace(':', '%3A')}"
    sbom = {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_ref)}",
        "version": 1,
        "metadata": {
            "timestamp": args.timestamp,
            "tools": {"components": [{"type": "application", "name": "deploy/release/sbom.py"}]},
            "component": {
                "type": "container", "bom-ref": image_ref, "name": "vultr-iam-operator",
                "version": args.version, "purl": image_ref,
                "hashes": [{"alg": "SHA-256", "content": args.digest.split(":", 1)[1]}],
                "components": [{"type": "application", "bom-ref": root_ref, "name": root["name"],
                                "version": root["version"], "purl": root_ref,
                                "licenses": [{"license": {"id": "Apache-2.0"}}]}],
            },
        },
        "components": components,
        "dependencies": dependencies,
    }
    with open(args.out, "w", encoding="utf-8") as out:
        json.dump(sbom, out, indent=2, sort_keys=False)
        out.write("\n")
    print(f"{args.out}: {len(linked)} crates, {len(files)} files, {len(debs)} Debian packages",
          file=sys.stderr)


if __name__ == "__main__":
    main()
