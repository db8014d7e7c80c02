#!/usr/bin/env python3
"""Deletes the shared libraries nothing in an image can load.

Usage: prune-libraries.py ROOT ENTRY...

Debian's python3-torch depends on packages a training script never touches (video codecs,
GIS, Mesa's drivers and LLVM: libtorch1.13 links FFmpeg, whose dependencies pull the rest).
Starting from the ELF files under each ENTRY (paths inside ROOT), this follows their DT_NEEDED
entries through the library directories and deletes every other shared object there. glibc's
own libraries (loaded by name at run time: NSS, gconv) and directories named by an ENTRY stay.
Prints what it kept and freed.
"""
import os
import subprocess
import sys

LIBRARY_DIRS = ["lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "usr/lib", "lib"]
# Loaded by glibc at run time (NSS modules, iconv), or the loader itself.
KEEP_PREFIXES = ("ld-linux", "libc.so", "libm.so", "libpthread", "libdl", "librt", "libnss_",
                 "libresolv", "libutil", "libanl", "libBrokenLocale", "libmvec", "libthread_db",
                 "libnsl", "libcrypt", "libgcc_s", "libstdc++")


def is_elf(path):
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def needed(path):
    out = subprocess.run(["readelf", "-d", "-W", path], capture_output=True, text=True).stdout
    names = []
    for line in out.splitlines():
        if "(NEEDED)" in line:
            names.append(line.split("[", 1)[1].split("]", 1)[0])
    return names


def resolve(root, name, runpath_dirs):
    for d in runpath_dirs + [os.path.join(root, d) for d in LIBRARY_DIRS]:
        candidate = os.path.join(d, name)
        if os.path.exists(candidate):
            return os.path.realpath(candidate)
    return None


def main():
    root, entries = os.path.realpath(sys.argv[1]), sys.argv[2:]
    queue = []
    for entry in entries:
        top = os.path.join(root, entry.lstrip("/"))
        for dirpath, _, files in os.walk(top):
            queue += [os.path.join(dirpath, f) for f in files]
        if os.path.isfile(top):
            queue.append(top)
    kept, missing = set(), set()
    while queue:
        path = os.path.realpath(queue.pop())
        if path in kept or not is_elf(path):
            continue
        kept.add(path)
        origin = [os.path.dirname(path)]
        for name in needed(path):
            found = resolve(root, name, origin)
            if found:
                queue.append(found)
            else:
                missing.add(name)
    freed, count = 0, 0
    for d in LIBRARY_DIRS:
        top = os.path.join(root, d)
        protected = [os.path.join(root, e.lstrip("/")) for e in entries]
        for dirpath, _, files in os.walk(top):
            if any(dirpath.startswith(p) for p in protected):
                continue
            if d in ("usr/lib", "lib") and dirpath != top and "x86_64-linux-gnu" in dirpath:
                continue
            for f in files:
                path = os.path.join(dirpath, f)
                if ".so" not in f or f.startswith(KEEP_PREFIXES) or os.path.islink(path):
                    continue
                if os.path.realpath(path) in kept or not is_elf(path):
                    continue
                freed += os.path.getsize(path)
                count += 1
                os.remove(path)
    # Symlinks left pointing at nothing.
    for d in LIBRARY_DIRS:
        for dirpath, _, files in os.walk(os.path.join(root, d)):
            for f in files:
                path = os.path.join(dirpath, f)
                if os.path.islink(path) and not os.path.exists(path):
                    os.remove(path)
    print(f"kept {len(kept)} ELF files, deleted {count} unused libraries ({freed // 2**20} MiB)")
    if missing:
        print("not found (the loader would fail on these): " + ", ".join(sorted(missing)))
        sys.exit(1)


if __name__ == "__main__":
    main()
