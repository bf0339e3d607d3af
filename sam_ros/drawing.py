"""Pictures of tracking results: masks coloured by object id, and contact sheets.

No rclpy: the node draws its ~/overlay with this, and tools draw the same pictures offline.
A track only needs the attributes ``id``, ``visible``, ``bbox`` and ``centroid``, and
optionally ``label`` (a sam_ros/ObjectTrack message has them).
"""

import cv2
import numpy as np


def _colour(obj_id):
    """A stable, distinct RGB colour per id (golden-ratio hue walk)."""
    h = (obj_id * 0.61803398875) % 1.0
    hsv = np.uint8([[[int(h * 180), 220, 255]]])
    return tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0])


# colour lookup table of the overlay: label (id mod 255, 1..255) -> RGB; 0 -> black
_LUT = np.zeros((256, 1, 3), np.uint8)
for _i in range(1, 256):
    _LUT[_i, 0] = _colour(_i)


def overlay_image(rgb, labels, tracks):
    """rgb with each object blended in its colour, its box, id, label and (with 3D) its
    distance drawn."""
    l8 = np.where(labels > 0, (labels - 1) % 255 + 1, 0).astype(np.uint8) \
        if labels.max(initial=0) > 255 else labels.astype(np.uint8)
    colours = cv2.LUT(cv2.merge([l8, l8, l8]), _LUT.reshape(256, 1, 3))
    out = cv2.addWeighted(rgb, 0.5, colours, 0.5, 0.0)
    cv2.copyTo(rgb, (l8 == 0).view(np.uint8), out)
    for t in tracks:
        if not t.visible:
            continue
        colour = tuple(int(c) for c in _LUT[(t.id - 1) % 255 + 1, 0])
        cv2.rectangle(out, (int(t.bbox[0]), int(t.bbox[1])), (int(t.bbox[2]), int(t.bbox[3])),
                      colour, 2)
        words = [str(t.id), getattr(t, "label", "")]
        if getattr(t, "has_3d", False):
            words.append(f"{t.position.z:.2f} m")  # how far along the optical axis
        text = " ".join(word for word in words if word)
        cv2.putText(out, text, (int(t.centroid[0]), int(t.centroid[1])),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def contact_sheet(images, captions, columns=4, tile_width=320, title=None):
    """RGB images scaled to ``tile_width`` and tiled row by row, each with its caption
    written in its top-left corner on a dark band (readable on any picture); ``title``, if
    given, is written above them, wrapped to the sheet's width."""
    h, w = images[0].shape[:2]
    tile_h = round(h * tile_width / w)
    rows = -(-len(images) // columns)
    sheet = np.zeros((rows * tile_h, columns * tile_width, 3), np.uint8)
    for i, (img, text) in enumerate(zip(images, captions)):
        tile = cv2.resize(img, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        tile[:th + base + 6, :tw + 8] //= 3
        cv2.putText(tile, text, (4, th + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        r, c = divmod(i, columns)
        sheet[r * tile_h:(r + 1) * tile_h, c * tile_width:(c + 1) * tile_width] = tile
    if not title:
        return sheet
    lines = _wrap(title, sheet.shape[1] - 16)
    line_h = 24
    band = np.full((line_h * len(lines) + 10, sheet.shape[1], 3), 32, np.uint8)
    for k, line in enumerate(lines):
        cv2.putText(band, line, (8, line_h * (k + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([band, sheet])


def _wrap(text, width, scale=0.6):
    """``text`` in lines no wider than ``width`` pixels at this font ``scale``."""
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines
