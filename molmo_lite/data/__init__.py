"""Data for the course: synthetic PixMo-like data made offline (``synthetic``), the text corpus the tiny tokenizer is
trained on (``corpus``); real PixMo loaders come later."""
