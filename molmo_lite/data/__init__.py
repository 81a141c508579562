"""Data for the course (chapter 07): every dataset yields ``examples.Example`` (one image, all its annotations).

``pixmo``: the real PixMo datasets through Hugging Face ``datasets`` (Hub ids online, local files of the same schema
offline); ``synthetic`` (scenes for pointing, counting, captions and QA), ``clocks`` and ``docs`` (charts, tables):
PixMo-like data made offline; ``collate``: encoding, packing, batching and the mixture; ``corpus``: the text the tiny
tokenizer and LM of chapter 04 are trained on."""
