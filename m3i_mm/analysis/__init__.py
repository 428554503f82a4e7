"""Looking inside trained models: where DCNv3 layers sample, effective receptive fields.

Library code of ``tools/analysis/visualize_sampling.py`` and
``tools/analysis/effective_receptive_field.py`` (the tools add reading, drawing and the
command line).
"""
from .dcnv3_sampling import (AxisMap, SamplingField, SamplingPoints, field_from_offsets,
                             field_of_layer, points_of_stack, record_layer_inputs,
                             stage_layers, stage_pixel_map)
from .receptive_field import (effective_receptive_field, input_gradient_of_centre,
                              mass_radius, stage_features)

__all__ = [
    'AxisMap', 'SamplingField', 'SamplingPoints', 'field_from_offsets', 'field_of_layer',
    'points_of_stack', 'record_layer_inputs', 'stage_layers', 'stage_pixel_map',
    'effective_receptive_field', 'input_gradient_of_centre', 'mass_radius', 'stage_features'
]
