# pyproc: `make` builds everything, `make check` runs every test,
# `make demo` runs the demo, `make bench` measures pyproc against its
# baselines, `make deps` installs the Debian packages needed.

PREFIX ?= /usr/local
DESTDIR ?=
# Where `make install` puts the libraries and the worker; the installed
# library looks for the worker relative to itself (host/pool.c).
LIBDIR ?= $(PREFIX)/lib
WORKERDIR ?= $(PREFIX)/libexec/pyproc
# What pyproc.pc adds for programs to find the library at run time: none
# is needed (or wanted) in a system library directory.
PC_RPATH ?= -Wl,-rpath,$${libdir}
B ?= build

CC ?= cc
OPT ?= -O2
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE -g $(OPT) -fPIC -fvisibility=hidden \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers \
	-I. -Iinclude -DPYPROC_BUILDING
CFLAGS += $(CFLAGS_BASE) $(SAN)
LDFLAGS += $(SAN)

# Debian's libpython3.11 through pkg-config, never the first python3 on PATH.
PY_CFLAGS := $(shell pkg-config --cflags python3-embed 2>/dev/null)
PY_LIBS := $(shell pkg-config --libs python3-embed 2>/dev/null)
PY_VERSION := $(shell pkg-config --modversion python3-embed 2>/dev/null)
PY_EXE := $(shell pkg-config --variable=exec_prefix python3-embed 2>/dev/null)/bin/python$(PY_VERSION)
# The worker links Debian's static libpython (from libpython3.11-dev), not
# the shared one: the shared library is built position-independent and
# reaches its own functions through the PLT, which costs pure-Python code
# about a fifth of its speed (README, "What the worker links").  Every
# object of the archive goes in and every symbol is exported, so that the
# extension modules the worker loads (_ssl, _decimal, numpy) find the C API
# in the executable, as they do in /usr/bin/python3.  The archive is not
# position-independent: hence -no-pie.  The libraries it needs are those
# its own build linked python3 with.
PY_STATIC_A := $(shell pkg-config --variable=libdir python3-embed 2>/dev/null)/libpython$(PY_VERSION).a
PY_STATIC_DEPS := $(shell $(PY_EXE) -c 'import sysconfig as s; \
	print(*(s.get_config_var(v) for v in ("MODLIBS", "LIBS", "SYSLIBS")))' 2>/dev/null)
PY_STATIC_LIBS := -no-pie -Wl,--export-dynamic -Wl,--whole-archive $(PY_STATIC_A) \
	-Wl,--no-whole-archive $(PY_STATIC_DEPS)
FFI_CFLAGS := $(shell pkg-config --cflags libffi 2>/dev/null)
FFI_LIBS := $(shell pkg-config --libs libffi 2>/dev/null)
CMOCKA_LIBS := $(shell pkg-config --libs cmocka 2>/dev/null || echo -lcmocka)
# How pyproc-worker itself links Python, for when it runs Python embedded
# (no pyproc-worker.so beside it, or AddressSanitizer builds).  A
# distribution package, which always ships the module, links the shared
# libpython instead: no copy of Python (and its expat) inside the binary,
# and a position-independent program (debian/rules sets this).
WORKER_PY_LIBS ?= $(PY_STATIC_LIBS)

SHM_SRC := $(wildcard shm/*.c)
HOST_SRC := $(wildcard host/*.c)
EMBED_SRC := $(wildcard embed/*.c)
EMBED_PY := $(wildcard embed/python/*.py)
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(SHM_SRC) $(HOST_SRC))
EMBED_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(EMBED_SRC)) $(B)/obj/embed/python_blob.o
EMBED_LIB_OBJ := $(filter-out $(B)/obj/embed/main.o,$(EMBED_OBJ))
SHM_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(SHM_SRC))

LIB_A := $(B)/lib/libpyproc.a
LIB_SO := $(B)/lib/libpyproc.so
WORKER := $(B)/bin/pyproc-worker
# The worker's code as the extension module that pyproc-worker has
# /usr/bin/python3 load (embed/boot.c), beside it.  Not in AddressSanitizer
# builds: an instrumented module cannot load into an uninstrumented
# program, so there the worker embeds Python itself, as it also does when
# the module is missing.
ifeq ($(findstring address,$(SAN)),)
WORKER_SO := $(B)/bin/pyproc-worker.so
WORKER_SO_CFLAGS := -DPYPROC_WORKER_SO=\"pyproc-worker.so\"
endif

# The command-line tool: public API only, linked to the shared library,
# which it finds beside itself (bin/../lib) in a build tree and installed;
# a build for a system library directory (Debian's) sets CLI_RPATH empty.
CLI := $(B)/bin/pyproc
CLI_RPATH ?= -Wl,-rpath,'$$ORIGIN/../lib'
CLI_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(wildcard cli/*.c))
JSON_CFLAGS := $(shell pkg-config --cflags jansson 2>/dev/null)
JSON_LIBS := $(shell pkg-config --libs jansson 2>/dev/null)

EXAMPLES := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))

# Event-loop adapters (examples/loops/NAME.c), each built against its
# loop's library, named by pkg-config.
LOOP_PKG_glib := glib-2.0
LOOP_PKG_uv := libuv
LOOP_PKG_libevent := libevent
LOOP_EXAMPLES := $(patsubst examples/loops/%.c,$(B)/examples/loops/%,$(wildcard examples/loops/*.c))

# Shared libraries that workers load with pyproc_add_native(): the tests'
# and the example's plugin.
NATIVE_LIBS := $(B)/tests/native/libpyproc-testnative.so \
	$(B)/examples/libpyproc-example-plugin.so

BENCH := $(B)/bench/pyproc-bench
BENCH_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(wildcard bench/*.c))

# Tests: tests/test_*.c link the library (and cmocka); tests/embed_test_*.c
# also link the worker's objects and Python.
TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/test_*.c))
EMBED_TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/embed_test_*.c))
# tests/shm_test_*.c test the shm module on its own: they link only its objects.
SHM_TESTS := $(patsubst tests/%.c,$(B)/tests/%,$(wildcard tests/shm_test_*.c))
TEST_TIMEOUT ?= 300
# The end-to-end tests (those that start workers), run a second time by
# `make check` with workers exec'd rather than forked from a template (the
# default; see PYPROC_START_TEMPLATE in include/pyproc.h).  test_hygiene
# and test_template run both ways themselves.
E2E_TESTS := $(filter-out %/test_hygiene %/test_template,\
	$(patsubst tests/%.c,$(B)/tests/%,$(shell grep -l -e '"e2e.h"' -e pyproc_pool_new tests/test_*.c)))
# The concurrency torture test (tests/torture.c) runs this long in each of
# the normal, ASan and TSan passes of `make check`; `make soak` runs it for
# SOAK_TORTURE_SECONDS.
TORTURE := $(B)/tests/torture
TORTURE_SECONDS ?= 20
export PYPROC_TORTURE_SECONDS := $(TORTURE_SECONDS)

.PHONY: all check demo bench install deps clean fuzz check-asan check-valgrind \
	test-programs run-tests check-tsan tsan-programs format-check

# The entry points first make sure the Debian packages are there, then run
# make again, so that the pkg-config queries above see what was installed.
ENTRY_POINTS := all check demo bench install soak fuzz check-asan check-valgrind check-tsan
ifndef PYPROC_DEPS_CHECKED
$(ENTRY_POINTS):
	@sh .ci/deps.sh
	@$(MAKE) --no-print-directory PYPROC_DEPS_CHECKED=1 $@
endif

deps:
	@sh .ci/deps.sh

$(B)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(B)/obj/embed/%.o: embed/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PY_CFLAGS) $(FFI_CFLAGS) -DPYPROC_PYTHON_EXE=\"$(PY_EXE)\" $(WORKER_SO_CFLAGS) \
		-MMD -MP -c $< -o $@

# The worker's Python side is compiled into the binary, as source and as
# the code object that source compiles to (marshal, after the build
# Python's major and minor version), which saves each worker and template
# compiling it as it starts.
$(B)/obj/embed/hub.marshal: embed/python/hub.py
	@mkdir -p $(dir $@)
	$(PY_EXE) -c 'import marshal, struct, sys; sys.stdout.buffer.write(struct.pack("<I", sys.hexversion >> 16) + marshal.dumps(compile(open(sys.argv[1]).read(), "<pyproc hub>", "exec")))' $< > $@

$(B)/obj/embed/python_blob.o: embed/python_blob.S $(EMBED_PY) $(B)/obj/embed/hub.marshal
	@mkdir -p $(dir $@)
	$(CC) -c -I. -I$(B)/obj/embed $< -o $@

$(LIB_A): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(LIB_SO): $(LIB_OBJ) host/libpyproc.map
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,--version-script=host/libpyproc.map -Wl,-soname,libpyproc.so.0 \
		$(LDFLAGS) -o $@ $(LIB_OBJ) -lpthread -ldl

# The name programs linked to the library look for at run time.
$(LIB_SO).0: $(LIB_SO)
	ln -sf libpyproc.so $@

$(B)/obj/cli/%.o: cli/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(JSON_CFLAGS) -MMD -MP -c $< -o $@

$(CLI): $(CLI_OBJ) $(LIB_SO).0
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(CLI_OBJ) -L$(B)/lib -lpyproc $(CLI_RPATH) $(JSON_LIBS)

$(WORKER): $(EMBED_OBJ) $(SHM_OBJ) | $(WORKER_SO)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(EMBED_OBJ) $(SHM_OBJ) $(WORKER_PY_LIBS) $(FFI_LIBS) -ldl -lpthread -lm

# Links no libpython: the C API comes from the program that loads it.
$(WORKER_SO): $(EMBED_LIB_OBJ) $(SHM_OBJ)
	@mkdir -p $(dir $@)
	$(CC) -shared $(LDFLAGS) -o $@ $^ $(FFI_LIBS) -ldl -lpthread -lm

$(B)/examples/%: examples/%.c $(LIB_A) include/pyproc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS) -lpthread -ldl

$(B)/examples/loops/%: examples/loops/%.c $(LIB_A) include/pyproc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(shell pkg-config --cflags $(LOOP_PKG_$*)) -o $@ $< $(LIB_A) $(LDFLAGS) \
		-lpthread -ldl $(shell pkg-config --libs $(LOOP_PKG_$*))

# Plugins export their functions as shared libraries usually do.
$(B)/tests/native/libpyproc-testnative.so: tests/native/testnative.c include/pyproc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=default -shared -o $@ $< $(LDFLAGS)

$(B)/examples/libpyproc-example-plugin.so: examples/plugin/plugin.c include/pyproc.h
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=default -shared -o $@ $< $(LDFLAGS)

$(BENCH): $(BENCH_OBJ) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $(BENCH_OBJ) $(LIB_A) -lpthread -ldl -lm

$(B)/tests/test_%: tests/test_%.c $(wildcard tests/*.h) $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -I. -o $@ $< $(LIB_A) $(LDFLAGS) $(CMOCKA_LIBS) -lpthread -ldl -lm

$(B)/tests/soak: tests/soak.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS) -lpthread -ldl -lm

$(TORTURE): tests/torture.c $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LIB_A) $(LDFLAGS) -lpthread -ldl -lm

$(B)/tests/embed_test_%: tests/embed_test_%.c $(EMBED_LIB_OBJ) $(SHM_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(PY_CFLAGS) -Wno-unused-parameter -I. -o $@ $< $(EMBED_LIB_OBJ) $(SHM_OBJ) \
		$(LDFLAGS) $(CMOCKA_LIBS) $(PY_LIBS) $(FFI_LIBS) -ldl -lpthread -lm

$(B)/tests/shm_test_%: tests/shm_test_%.c $(SHM_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Wno-unused-parameter -I. -o $@ $< $(SHM_OBJ) $(LDFLAGS) $(CMOCKA_LIBS) -lpthread

ifdef PYPROC_DEPS_CHECKED
all: $(LIB_A) $(LIB_SO) $(WORKER) $(CLI) $(EXAMPLES) $(LOOP_EXAMPLES) $(TESTS) $(EMBED_TESTS) $(SHM_TESTS) $(BENCH) \
	$(NATIVE_LIBS) $(TORTURE)

check: all
	@echo "== host/ floors (host/floors.txt), and the code as .clang-format says"
	@sh tests/check_layers.sh
	@sh .ci/format-check.sh $(CLANG_FORMAT) $(FORMAT_FILES)
	@sh tests/run.sh $(TEST_TIMEOUT) $(SHM_TESTS) $(TESTS) $(EMBED_TESTS) $(TORTURE)
	@echo "== the end-to-end tests again, with workers exec'd (PYPROC_START=exec)"
	@PYPROC_START=exec sh tests/run.sh $(TEST_TIMEOUT) $(E2E_TESTS)
	@echo "== $(CLI), the command-line tool"
	@timeout -k 5 $(TEST_TIMEOUT) sh tests/cli.sh $(B)
	@echo "== the man pages: rendered without warnings, every exported function in one"
	@timeout -k 5 $(TEST_TIMEOUT) sh tests/man.sh $(B)
	@echo "== every program in examples/, its output checked"
	@timeout -k 5 $(TEST_TIMEOUT) sh tests/examples.sh $(B)
	@echo "== make install, then a program built against the installed tree"
	@timeout -k 5 $(TEST_TIMEOUT) sh tests/install.sh
	@echo "== $(BENCH) --smoke"
	@timeout -k 5 $(TEST_TIMEOUT) $(BENCH) --smoke --csv $(B)/bench/smoke.csv \
		--samples $(B)/bench/smoke-samples.csv > $(B)/bench/smoke.txt || \
		{ cat $(B)/bench/smoke.txt; echo "FAILED: $(BENCH) --smoke"; exit 1; }
	@echo "bench smoke run passed (table in $(B)/bench/smoke.txt)"
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory check-tsan
	@$(MAKE) --no-print-directory check-valgrind

# What the tests need, and running them, in whichever build directory $(B).
test-programs: $(WORKER) $(TESTS) $(EMBED_TESTS) $(SHM_TESTS) $(NATIVE_LIBS) $(TORTURE)

run-tests: test-programs
	@sh tests/run.sh $(TEST_TIMEOUT) $(SHM_TESTS) $(TESTS) $(EMBED_TESTS) $(TORTURE)

# The same tests, library and worker built again with AddressSanitizer and
# UndefinedBehaviorSanitizer (any report fails the run), in build-asan/.
# CPython's own process-lifetime allocations are suppressed for
# LeakSanitizer by tests/lsan.supp, nothing else.
ASAN_B := build-asan
ASAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined \
	-fno-omit-frame-pointer
# Reports go to $(ASAN_B)/sanitizer.<pid>, so that those of workers (which
# the tests may never hear of) fail the run too.  Workers are crashed on
# purpose by some tests, which check the signal: ASan leaves SIGSEGV alone.
ASAN_LOG := $(CURDIR)/$(ASAN_B)/sanitizer
ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:handle_segv=0:log_path=$(ASAN_LOG) \
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:log_path=$(ASAN_LOG)
check-asan:
	@$(MAKE) --no-print-directory B=$(ASAN_B) OPT=-O1 SAN="$(ASAN_FLAGS)" test-programs
	@echo "== the tests again, under AddressSanitizer and UndefinedBehaviorSanitizer"
	@rm -f $(ASAN_LOG).*
	@$(ASAN_ENV) $(MAKE) --no-print-directory B=$(ASAN_B) OPT=-O1 SAN="$(ASAN_FLAGS)" \
		run-tests; rc=$$?; \
	if ls $(ASAN_LOG).* > /dev/null 2>&1; then \
		cat $(ASAN_LOG).*; echo "FAILED: sanitizer reports above ($(ASAN_LOG).*)"; exit 1; \
	fi; \
	exit $$rc

# The host side again under ThreadSanitizer, in build-tsan/: the library,
# the shm and host tests and the torture test; any report fails the run.
# The worker (and the test plugin it loads) is built WITHOUT TSan, in
# build-tsan/worker/, and copied to where the tests look for it: it is
# another process, whose threads TSan in the host could not see anyway,
# and under TSan its uninstrumented libpython would need suppressions for
# CPython's own lock-free tricks.  So tests/tsan.supp suppresses nothing
# of pyproc.  The embedded-interpreter tests (embed_test_*) are worker
# code and stay out for the same reason.  TSan sees the C11 atomics
# around the raw futexes, so a report is a missing atomic, lock or order.
# What it cannot see is an ordering that runs only through a worker (a
# request out, its answer back); the host must not rely on that alone
# anyway, since a worker may die instead of answering.
TSAN_B := build-tsan
# -Wno-tsan: GCC warns that TSan does not model atomic_thread_fence(); the
# ring's seq_cst fences (shm/ring.c) order a store against a load for the
# sleep/wake handshake with the worker, another process TSan cannot see.
TSAN_FLAGS := -fsanitize=thread -fno-omit-frame-pointer -Wno-tsan
TSAN_LOG := $(CURDIR)/$(TSAN_B)/sanitizer
TSAN_ENV := TSAN_OPTIONS=log_path=$(TSAN_LOG):suppressions=$(CURDIR)/tests/tsan.supp:second_deadlock_stack=1:halt_on_error=0
TSAN_WORKER_B := $(TSAN_B)/worker
tsan-programs: $(TESTS) $(SHM_TESTS) $(TORTURE)
check-tsan:
	@$(MAKE) --no-print-directory B=$(TSAN_WORKER_B) OPT=-O1 SAN= \
		$(TSAN_WORKER_B)/bin/pyproc-worker $(TSAN_WORKER_B)/tests/native/libpyproc-testnative.so
	@mkdir -p $(TSAN_B)/bin $(TSAN_B)/tests/native
	@cp $(TSAN_WORKER_B)/bin/pyproc-worker $(TSAN_WORKER_B)/bin/pyproc-worker.so $(TSAN_B)/bin/
	@cp $(TSAN_WORKER_B)/tests/native/libpyproc-testnative.so $(TSAN_B)/tests/native/
	@$(MAKE) --no-print-directory B=$(TSAN_B) OPT=-O1 SAN="$(TSAN_FLAGS)" tsan-programs
	@echo "== the host tests again, under ThreadSanitizer"
	@rm -f $(TSAN_LOG).*
	@$(TSAN_ENV) sh tests/run.sh $(TEST_TIMEOUT) \
		$(patsubst $(B)/%,$(TSAN_B)/%,$(SHM_TESTS) $(TESTS) $(TORTURE)); rc=$$?; \
	if ls $(TSAN_LOG).* > /dev/null 2>&1; then \
		cat $(TSAN_LOG).*; echo "FAILED: ThreadSanitizer reports above ($(TSAN_LOG).*)"; exit 1; \
	fi; \
	exit $$rc

# Valgrind's memcheck over end-to-end runs of the host library: no invalid
# access, no definite or indirect leak.  Workers are other processes (and
# Python), so they run natively.
# Debian 12's Valgrind lacks the pidfd calls; tests/valgrind/pidfd_shim.c
# stands in for them (see there).  Left out: the tests that run a copy of
# themselves as the host (test_crash, test_debug), which Valgrind cannot
# follow through /proc/self/exe, and test_hygiene, which needs posix_spawn
# to report a failed chdir, which it cannot under Valgrind.
VALGRIND_TESTS := $(addprefix $(B)/tests/,test_msg test_wire test_pool test_proc test_aio test_freelist \
	test_cancel test_native test_sigchld test_garbage)
VALGRIND_SHIM := $(B)/tests/valgrind/libpidfd-shim.so
VALGRIND := valgrind --quiet --leak-check=full --errors-for-leak-kinds=definite,indirect \
	--show-leak-kinds=definite,indirect --error-exitcode=99 --trace-children=no
$(VALGRIND_SHIM): tests/valgrind/pidfd_shim.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -fvisibility=default -shared -o $@ $< $(LDFLAGS) -ldl -lpthread
check-valgrind: $(VALGRIND_TESTS) $(VALGRIND_SHIM) $(WORKER) $(NATIVE_LIBS)
	@failed=""; for t in $(VALGRIND_TESTS); do \
		echo "== valgrind $$t"; \
		LD_PRELOAD=$(CURDIR)/$(VALGRIND_SHIM) timeout -k 5 $$(($(TEST_TIMEOUT) * 3)) \
			$(VALGRIND) $$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "FAILED under valgrind:$$failed"; exit 1; fi; \
	echo "valgrind: no invalid access, no definite or indirect leak"

# libFuzzer targets, built with clang into build-fuzz/ and run for
# FUZZ_SECONDS each, starting from the seeds in fuzz/corpus/.
FUZZ_B := build-fuzz
FUZZ_SECONDS ?= 20
FUZZ_CC := clang
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer \
	-Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-missing-field-initializers \
	-I. -Iinclude -DPYPROC_BUILDING \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
FUZZERS := $(FUZZ_B)/fuzz_frame $(FUZZ_B)/fuzz_unpack $(FUZZ_B)/fuzz_format

$(FUZZ_B)/fuzz_frame: fuzz/fuzz_frame.c shm/ring.c shm/futex.c shm/ring.h shm/frame.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_frame.c shm/ring.c shm/futex.c -lpthread

$(FUZZ_B)/fuzz_unpack: fuzz/fuzz_unpack.c embed/convert.c embed/convert.h shm/buf.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) $(PY_CFLAGS) -o $@ fuzz/fuzz_unpack.c embed/convert.c shm/buf.c \
		$(PY_LIBS) -lm

$(FUZZ_B)/fuzz_format: fuzz/fuzz_format.c host/fmt.c host/fmt.h host/msg.c host/msg.h host/shared.c host/shared.h shm/buf.c \
		shm/mpvalid.c shm/mpvalid.h host/freelist.c host/freelist.h
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ fuzz/fuzz_format.c host/fmt.c host/msg.c host/shared.c shm/buf.c shm/mpvalid.c \
		host/freelist.c -lpthread

fuzz: $(FUZZERS)
	@for t in $(notdir $(FUZZERS)); do \
		sh fuzz/run.sh $(FUZZ_B) $$t $(FUZZ_SECONDS) || exit 1; \
	done

# A million calls while workers are killed; CI runs a shorter one.  Then
# the torture test (see tests/torture.c) for SOAK_TORTURE_SECONDS.
SOAK_CALLS ?= 1000000
SOAK_TORTURE_SECONDS ?= 300
soak: $(B)/tests/soak $(TORTURE) $(WORKER)
	timeout -k 5 1800 $(B)/tests/soak $(SOAK_CALLS)
	timeout -k 5 $$(($(SOAK_TORTURE_SECONDS) + 300)) $(TORTURE) $(SOAK_TORTURE_SECONDS)

demo: $(B)/examples/demo $(WORKER)
	cd examples && ../$(B)/examples/demo

# The full bench; its table and latency plot are copied to docs/ for the
# README.
bench: $(BENCH) $(WORKER)
	$(BENCH) --csv $(B)/bench/results.csv --samples $(B)/bench/latency-samples.csv \
		--table $(B)/bench/results.txt
	/usr/bin/python3 bench/plot.py $(B)/bench/latency-samples.csv \
		$(B)/bench/results.csv $(B)/bench/latency.png $(B)/bench/results.txt
	@mkdir -p docs
	cp $(B)/bench/latency.png docs/bench-latency.png
	{ echo "Made by \`make bench\` on $$(date -u '+%Y-%m-%d %H:%M UTC')."; echo; \
		cat $(B)/bench/results.txt; } > docs/bench-latest.txt

install: $(LIB_A) $(LIB_SO) $(WORKER) $(CLI)
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include \
		$(DESTDIR)$(WORKERDIR) $(DESTDIR)$(PREFIX)/bin
	install -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libpyproc.a
	install -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libpyproc.so.0
	ln -sf libpyproc.so.0 $(DESTDIR)$(LIBDIR)/libpyproc.so
	install -m 644 include/pyproc.h $(DESTDIR)$(PREFIX)/include/pyproc.h
	install -m 755 $(WORKER) $(DESTDIR)$(WORKERDIR)/pyproc-worker
	$(if $(WORKER_SO),install -m 644 $(WORKER_SO) $(DESTDIR)$(WORKERDIR)/pyproc-worker.so)
	install -m 755 $(CLI) $(DESTDIR)$(PREFIX)/bin/pyproc
	install -d $(DESTDIR)$(PREFIX)/lib/python3/dist-packages/pyproc-stubs
	install -m 644 embed/python/pyproc.pyi \
		$(DESTDIR)$(PREFIX)/lib/python3/dist-packages/pyproc-stubs/__init__.pyi
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@RPATH@|$(PC_RPATH)|' \
		-e 's|@VERSION@|$(shell sed -n 's/^#define PYPROC_VERSION_[A-Z]* \([0-9]*\)/\1/p' include/pyproc.h | paste -sd.)|' \
		pyproc.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/pyproc.pc

endif

# ---- man pages ----
# man/PAGE.N.scd (scdoc) becomes $(B)/man/manN/PAGE.N.  A section-3 page
# documents the functions named on its NAME line; man/links.sh gives each
# of them a link page $(B)/man/man3/FUNCTION.3 (".so man3/PAGE.3") so that
# `man FUNCTION` opens it.  tests/man.sh (in `make check`) fails for an
# exported function that no page names.
# The pages of pools over MPI are mpi/mpi.mk's, made and installed with
# the rest of MPI.
SCDOC ?= scdoc
MANDIR ?= $(PREFIX)/share/man
MAN_MPI_SRC := man/pyproc-mpi.3.scd man/pyproc-agent.1.scd
MAN_SRC3 := $(filter-out $(MAN_MPI_SRC),$(wildcard man/*.3.scd))
MAN_PAGES := $(patsubst man/%.1.scd,$(B)/man/man1/%.1,$(filter-out $(MAN_MPI_SRC),$(wildcard man/*.1.scd))) \
	$(patsubst man/%.3.scd,$(B)/man/man3/%.3,$(MAN_SRC3))
MAN_LINKS := $(B)/man/links.stamp

.PHONY: man install-man
man: $(MAN_PAGES) $(MAN_LINKS)

$(B)/man/man1/%.1: man/%.1.scd
	@mkdir -p $(dir $@)
	$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

$(B)/man/man3/%.3: man/%.3.scd
	@mkdir -p $(dir $@)
	$(SCDOC) < $< > $@.tmp && mv $@.tmp $@

$(MAN_LINKS): $(MAN_SRC3) man/links.sh
	sh man/links.sh $(B)/man/man3 $(MAN_SRC3)
	@touch $@

install-man: man
	install -d $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 644 $(filter %.1,$(MAN_PAGES)) $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(filter %.3,$(MAN_PAGES)) $(B)/man/man3/pyproc_*.3 $(DESTDIR)$(MANDIR)/man3/

ifdef PYPROC_DEPS_CHECKED
all: man
install: install-man
endif

# ---- Debian packages ----
# `make deb` builds libpyproc0, libpyproc-dev and pyproc-tools (debian/)
# in a copy of the tree, $(DEB_B)/src, so that neither the build nor its
# products touch the tree; the .debs land in $(DEB_B).  `make check-deb`
# installs them into this machine, tries them and removes them again
# (tests/deb.sh): not part of `make check`, since it changes the machine.
DEB_B := $(B)/deb
.PHONY: deb check-deb
deb:
	@sh .ci/deps.sh
	rm -rf $(DEB_B)
	mkdir -p $(DEB_B)/src
	tar -cf - --exclude=./.git --exclude=./build --exclude='./build-*' --exclude='./$(B)' . | \
		tar -xf - -C $(DEB_B)/src
	cd $(DEB_B)/src && DEB_BUILD_OPTIONS="parallel=2 $(DEB_BUILD_OPTIONS)" \
		nice dpkg-buildpackage -b -us -uc
	@ls $(DEB_B)/*.deb

check-deb: deb
	timeout -k 5 $(TEST_TIMEOUT) sh tests/deb.sh $(DEB_B)

# Whether every C file reads as .clang-format says; reformats nothing.
# Not part of `make check` yet.
CLANG_FORMAT ?= clang-format
FORMAT_FILES := $(sort $(wildcard host/*.[ch] shm/*.[ch] embed/*.[ch] cli/*.[ch] tests/*.[ch] \
	tests/*/*.[ch] bench/*.[ch] examples/*.[ch] examples/*/*.[ch] fuzz/*.[ch] include/*.h \
	mpi/*.[ch]))
format-check:
	@sh .ci/format-check.sh $(CLANG_FORMAT) $(FORMAT_FILES)

clean:
	rm -rf $(B) build-*

include mpi/mpi.mk

-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
