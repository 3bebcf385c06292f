#!/usr/bin/python3
"""A window that repaints itself about 25 times a second, for
tests/interop_video.rs: a 640x480 Gtk3 window titled "xfwd-repaint" whose
content (a colour that cycles and a bar that moves) changes every 40 ms,
so that an xpra server sees a steady stream of full-window damage (its
video-region detection turns that into h264 when the client can decode
it).

    repaint.py [SECONDS [X Y]]

exits after SECONDS (default 120); X Y: where to put the window (xpra's
client puts its own window there too, so that a screenshot of the
client's display finds it away from other windows)."""

import sys

import gi

gi.require_version("Gtk", "3.0")
from gi.repository import GLib, Gtk  # noqa: E402

W, H = 640, 480
LIFETIME = float(sys.argv[1]) if len(sys.argv) > 1 else 120.0
POS = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else None


class Repaint:
    def __init__(self):
        self.frame = 0
        self.win = Gtk.Window(title="xfwd-repaint")
        self.win.set_default_size(W, H)
        self.area = Gtk.DrawingArea()
        self.area.set_size_request(W, H)
        self.area.connect("draw", self.draw)
        self.win.add(self.area)
        self.win.connect("destroy", Gtk.main_quit)
        if POS:
            self.win.move(*POS)
        self.win.show_all()
        GLib.timeout_add(40, self.tick)
        GLib.timeout_add(int(LIFETIME * 1000), Gtk.main_quit)

    def tick(self):
        self.frame += 1
        self.area.queue_draw()
        return True

    def draw(self, _widget, cr):
        f = self.frame
        w = self.area.get_allocated_width()
        h = self.area.get_allocated_height()
        # A background whose colour cycles (never black), ...
        r = 0.3 + 0.7 * ((f * 7) % 100) / 100.0
        g = 0.3 + 0.7 * ((f * 13) % 100) / 100.0
        b = 0.3 + 0.7 * ((f * 3) % 100) / 100.0
        cr.set_source_rgb(r, g, b)
        cr.paint()
        # ... a white bar sweeping across it, ...
        x = (f * 16) % w
        cr.set_source_rgb(1, 1, 1)
        cr.rectangle(x, 0, 40, h)
        cr.fill()
        # ... and a checker band that shifts every frame (texture, so that
        # a video encoder has real work).
        cr.set_source_rgb(0, 0, 0)
        for i in range(0, w, 20):
            for j in range(h // 3, h // 3 + 60, 20):
                if ((i + j) // 20 + f) % 2 == 0:
                    cr.rectangle(i, j, 20, 20)
        cr.fill()
        return False


if __name__ == "__main__":
    Repaint()
    Gtk.main()
