"""The course's models. Each takes what its `input_kind` says ("bands": a list of band spectrograms
(batch, n_bins_b, frames); "waveform": (batch, samples)) and returns {"logits": (batch, 11), "embedding": ...}.

Importing this package is cheap: import the model modules themselves (irmas_lib.models.basic, .panns;
.pretrained loads CNN14's AudioSet weights).
"""
