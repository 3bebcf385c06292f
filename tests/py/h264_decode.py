#!/usr/bin/python3
"""Helper for tests/video_codec.rs: decodes an h264 stream the way xpra's
3.1.3 client does (client/window_backing_base.py: dec_avcodec2's Decoder,
then csc_swscale to BGRX).

Must run under Debian's /usr/bin/python3 with xpra (3.1.3) installed. Exits
with status 3 and a message on stderr when a module is missing.

    h264_decode.py WIDTH HEIGHT CSC IN OUT

IN holds the frames, each a 4-byte little-endian length then that many
bytes of one Annex B access unit. For each frame, OUT gets WIDTH*HEIGHT*4
bytes of BGRX (tight rows) and stdout one JSON line:
    {"frame": N, "format": "YUV420P", "size": [w, h], "ok": true}
or, when a frame does not decode, {"frame": N, "ok": false, "error": "..."}
(and nothing in OUT for it).
"""

import json
import struct
import sys

try:
    from xpra.util import typedict
    from xpra.codecs.dec_avcodec2.decoder import Decoder
    from xpra.codecs.csc_swscale.colorspace_converter import ColorspaceConverter
except ImportError as e:  # pragma: no cover
    sys.stderr.write("h264_decode: cannot import xpra's codecs: %s\n" % e)
    sys.exit(3)


def frames(data):
    at = 0
    while at < len(data):
        (n,) = struct.unpack_from("<I", data, at)
        at += 4
        yield data[at:at + n]
        at += n


def main():
    width, height, csc = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    with open(sys.argv[4], "rb") as f:
        data = f.read()
    out = open(sys.argv[5], "wb")
    dec = Decoder()
    dec.init_context("h264", width, height, csc)
    conv = None
    for i, au in enumerate(frames(data)):
        options = typedict({"frame": i, "csc": csc, "quality": 100, "speed": 0})
        img = dec.decompress_image(au, options)
        if not img:
            print(json.dumps({"frame": i, "ok": False, "error": "no image"}), flush=True)
            continue
        fmt = img.get_pixel_format()
        if conv is None:
            conv = ColorspaceConverter()
            # The client's speed for quality 100 at the same size: 0.
            conv.init_context(width, height, fmt, width, height, "BGRX", 0)
        rgb = conv.convert_image(img)
        pixels = memoryview(rgb.get_pixels()).cast("B")
        stride = rgb.get_rowstride()
        row = width * 4
        for y in range(height):
            out.write(pixels[y * stride:y * stride + row])
        print(json.dumps({"frame": i, "format": fmt, "size": [img.get_width(), img.get_height()],
                          "ok": True}), flush=True)
        rgb.free()
        img.free()
    out.close()
    dec.clean()


if __name__ == "__main__":
    main()
