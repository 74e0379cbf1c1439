"""Export a tuned Moonshine to the ONNX files Moonshine's own runtimes load, and verify it there.

``graphs`` (what each graph is and how it is exported), ``merge`` (the decoder's two step
graphs under one ``If``), ``runtime_files`` (int8, ``.ort``, ``tokenizer.bin``), ``job``
(the job behind ``python -m lora.scripts.export_onnx``). The runtimes it is checked in live in
:mod:`lora.runtime`.
"""
