// The translation unit that carries the shared precompiled ATen headers (cmake/TorchPch.cmake).
