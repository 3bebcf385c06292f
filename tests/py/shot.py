#!/usr/bin/python3
"""Screenshots of an X display for tests/interop_video.rs (python3-pil,
built with XCB here).

    shot.py DISPLAY OUT_PREFIX X Y W H [GAP_SECONDS]

takes two screenshots of the whole display GAP_SECONDS (default 1) apart,
saves them as OUT_PREFIX-1.png and OUT_PREFIX-2.png, and prints one JSON
line about the rectangle X Y W H in each: how many distinct colours, the
share of pure black pixels, and the share of pixels that changed between
the two."""

import json
import sys
import time

from PIL import ImageGrab


def main():
    display, prefix = sys.argv[1], sys.argv[2]
    x, y, w, h = (int(v) for v in sys.argv[3:7])
    gap = float(sys.argv[7]) if len(sys.argv) > 7 else 1.0
    shots = []
    for i in (1, 2):
        if i == 2:
            time.sleep(gap)
        img = ImageGrab.grab(xdisplay=display).convert("RGB")
        img.save("%s-%i.png" % (prefix, i))
        shots.append(img.crop((x, y, x + w, y + h)))
    a, b = (list(s.getdata()) for s in shots)
    n = max(1, len(a))
    out = {
        "size": list(shots[0].size),
        "colours": [len(set(a)), len(set(b))],
        "black": [sum(1 for p in a if p == (0, 0, 0)) / n, sum(1 for p in b if p == (0, 0, 0)) / n],
        "changed": sum(1 for p, q in zip(a, b) if p != q) / n,
        "files": ["%s-1.png" % prefix, "%s-2.png" % prefix],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
