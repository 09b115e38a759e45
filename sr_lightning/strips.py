"""Geometry of the comparison strips `eval` writes (LR | bicubic | each model | HR, labelled) and `mos prepare`
cuts back into panels: one definition, so a change to the drawing cannot silently misalign the cutting."""
LABEL_STRIP = 14  # px of label text above each panel
PANEL_GAP = 4     # px between panels
