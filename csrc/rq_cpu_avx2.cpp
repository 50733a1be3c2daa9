// AVX2 variant: see rq_cpu.cpp
