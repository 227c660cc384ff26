// Umbrella header of the nhood C++ API.
#pragma once

#include "nhood/api.hpp"
#include "nhood/error.hpp"
#include "nhood/problem.hpp"
#include "nhood/types.hpp"
#include "nhood/window.hpp"
