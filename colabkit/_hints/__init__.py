"""Plain-language hints for PyTorch errors. Private package: colabkit/__init__.py re-exports.

Modules, lowest first (each imports only those above it):

    rules       Hint, explain() and the error-pattern rules (no torch import)
    state       the on/off flag
    excepthook  install_excepthook() for scripts; the warnings.showwarning chain
    shell       IPython / Colab wiring: the hint after a failing cell
    switch      colabkit.hints(): on/off, hooking a shell that started after import
"""
