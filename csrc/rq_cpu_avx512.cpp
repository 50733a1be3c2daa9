// AVX-512 variant: see rq_cpu.cpp
