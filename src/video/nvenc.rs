//! NVIDIA devices and their NVENC engines (issue 13: being written).
