// Only declares LLVMFuzzerRunDriver for Swift (see include/CFuzzDriver.h).
#include "CFuzzDriver.h"
