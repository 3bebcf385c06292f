#!/usr/bin/python3
"""Helper for tests/interop_codecs.rs: runs the real Python codecs.

Must run under Debian's /usr/bin/python3 with python3-rencode (1.0.6) and
xpra (3.1.3) installed. Exits with status 3 and a message on stderr when a
module is missing.

Reads one request per line on stdin and writes one answer line per request:

    versions                -> JSON object with the modules' versions
    rdumps <desc>           -> hex of rencode.dumps(value)
    rdumps64 <desc>         -> hex of rencode.dumps(value, 64)
    rloads <hex>            -> desc of rencode.loads(bytes)
    bdumps <desc>           -> hex of xpra's bencode(value)
    bloads <hex>            -> "<consumed> <desc>" from xpra's bdecode(bytes)

Any failure answers "ERR <exception type>: <message>" instead.

<desc> is compact JSON describing a value, the same form the Rust test
writes:
    ["i", "<decimal>"]  int            ["f", "<16 hex digits>"]  float (f64 BE)
    ["T"] ["F"] ["N"]   True/False/None
    ["b", "<hex>"]      bytes          ["s", "<hex of UTF-8>"]   str
    ["l", [desc...]]    list/tuple     ["d", [[k, v]...]]        dict
"""

import json
import struct
import sys

try:
    import rencode
    from xpra.net import bencode as xpra_bencode
except ImportError as e:  # pragma: no cover
    sys.stderr.write("interop_helper: cannot import the Python codecs: %s\n" % e)
    sys.exit(3)


def build(d):
    tag = d[0]
    if tag == "i":
        return int(d[1])
    if tag == "f":
        return struct.unpack("!d", bytes.fromhex(d[1]))[0]
    if tag == "T":
        return True
    if tag == "F":
        return False
    if tag == "N":
        return None
    if tag == "b":
        return bytes.fromhex(d[1])
    if tag == "s":
        return bytes.fromhex(d[1]).decode("utf8")
    if tag == "l":
        # tuples, so that lists can be dict keys
        return tuple(build(x) for x in d[1])
    if tag == "d":
        return dict((build(k), build(v)) for k, v in d[1])
    raise ValueError("bad description tag %r" % (tag,))


def describe(v):
    if v is True:
        return ["T"]
    if v is False:
        return ["F"]
    if v is None:
        return ["N"]
    if isinstance(v, int):
        return ["i", str(v)]
    if isinstance(v, float):
        return ["f", struct.pack("!d", v).hex()]
    if isinstance(v, bytes):
        return ["b", v.hex()]
    if isinstance(v, str):
        return ["s", v.encode("utf8").hex()]
    if isinstance(v, (list, tuple)):
        return ["l", [describe(x) for x in v]]
    if isinstance(v, dict):
        return ["d", [[describe(k), describe(x)] for k, x in v.items()]]
    raise ValueError("cannot describe %r" % (type(v),))


def dump(d):
    return json.dumps(d, separators=(",", ":"))


def answer(op, arg):
    if op == "versions":
        return dump({
            "rencode": repr(rencode.__version__),
            "bencode": repr(xpra_bencode.__version__),
            "cython_bencode": bool(getattr(xpra_bencode, "cython_bencode_loaded", False)),
        })
    if op == "rdumps":
        return rencode.dumps(build(json.loads(arg))).hex()
    if op == "rdumps64":
        return rencode.dumps(build(json.loads(arg)), 64).hex()
    if op == "rloads":
        return dump(describe(rencode.loads(bytes.fromhex(arg))))
    if op == "bdumps":
        return xpra_bencode.bencode(build(json.loads(arg))).hex()
    if op == "bloads":
        v, consumed = xpra_bencode.bdecode(bytes.fromhex(arg))
        return "%d %s" % (consumed, dump(describe(v)))
    raise ValueError("unknown op %r" % (op,))


def main():
    for line in sys.stdin:
        line = line.rstrip("\n")
        op, _, arg = line.partition(" ")
        try:
            out = answer(op, arg)
        except BaseException as e:  # noqa: B902 - report every failure
            out = "ERR %s: %s" % (type(e).__name__, str(e).replace("\n", " "))
        sys.stdout.write(out + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
