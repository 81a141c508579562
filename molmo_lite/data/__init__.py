"""Data for the course: synthetic PixMo-like data made offline (``synthetic``); real PixMo loaders come later."""
