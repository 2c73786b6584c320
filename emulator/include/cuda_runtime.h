// The emulated build's stand-in for the CUDA header of this name.
#pragma once
#include "../cuda_emu.h"
