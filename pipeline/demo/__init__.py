"""The bundled demo dataset: synthetic shapes on clutter, with labels and masks
(``data.write_demo_dataset``)."""
