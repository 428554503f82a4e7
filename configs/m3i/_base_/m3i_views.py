# The two M3I views (m3i_method.md section 3.1, SiameseIM defaults) and their packing.
# Sources decode images themselves (bad samples are skipped and counted there), so the
# pipeline starts from a decoded image.
view_size = 224
train_pipeline = [
    dict(type='m3i_mm.M3IViews', size=view_size, scale=(0.08, 1.0)),
    dict(type='m3i_mm.PackM3IInputs'),
]
