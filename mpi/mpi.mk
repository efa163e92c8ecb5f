# pyproc over MPI (mpi/, include/pyproc-mpi.h), included by the Makefile:
# libpyproc-mpi (static and shared: the whole pyproc API plus the MPI
# pool, so that libpyproc itself needs no MPI), pyproc-mpi.pc, the agent
# program, and tests/mpi.sh.  Built only where Open MPI's pkg-config file
# is (.ci/deps.sh installs it).

# PYPROC_MPI=0 leaves it all out (debian/rules: not packaged yet).
PYPROC_MPI ?= 1
ifeq ($(PYPROC_MPI),1)
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS := $(shell pkg-config --libs ompi-c 2>/dev/null)
endif
MPI_OBJ := $(B)/obj/mpi/wire.o $(B)/obj/mpi/lines.o $(B)/obj/mpi/relay.o
MPI_LIB_A := $(B)/lib/libpyproc-mpi.a
MPI_LIB_SO := $(B)/lib/libpyproc-mpi.so
AGENT := $(B)/bin/pyproc-agent
MPI_TEST := $(B)/tests/mpi_e2e
MPI_BENCH := $(B)/bench/pyproc-bench-mpi

$(B)/obj/mpi/%.o: mpi/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -MMD -MP -c $< -o $@

$(MPI_LIB_A): $(LIB_OBJ) $(MPI_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(MPI_LIB_SO): $(LIB_OBJ) $(MPI_OBJ) host/libpyproc.map mpi/libpyproc-mpi.map
	@mkdir -p $(dir $@)
	$(CC) -shared -Wl,--version-script=host/libpyproc.map \
		-Wl,--version-script=mpi/libpyproc-mpi.map -Wl,-soname,libpyproc-mpi.so.0 \
		$(LDFLAGS) -o $@ $(LIB_OBJ) $(MPI_OBJ) $(MPI_LIBS) -lpthread -ldl

$(MPI_LIB_SO).0: $(MPI_LIB_SO)
	ln -sf libpyproc-mpi.so $@

$(AGENT): $(B)/obj/mpi/agent.o $(B)/obj/mpi/wire.o $(LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(MPI_LIBS) -lpthread -ldl

$(MPI_BENCH): $(B)/obj/mpi/bench.o $(MPI_LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(MPI_LIBS) -lpthread -ldl

# The end-to-end tests against an MPI pool (tests/mpi.sh runs them).
$(MPI_TEST): tests/mpi_e2e.c $(wildcard tests/*.h) $(MPI_LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -Wno-unused-parameter -I. -o $@ $< $(MPI_LIB_A) $(LDFLAGS) \
		$(MPI_LIBS) $(CMOCKA_LIBS) -lpthread -ldl -lm

# The local pool's end-to-end tests built again so that their e2e pools
# are MPI pools (tests/e2e.h, PYPROC_E2E_MPI); tests/mpi.sh runs them.
# Each leaves out, under PYPROC_E2E_MPI, the tests that start the test
# program again outside mpirun (test_crash's host, test_control's deaf
# worker).
MPI_E2E_TESTS := $(patsubst %,$(B)/tests/mpi_test_%,calls cancel events map dispatch aio proc drain refs crash control)
$(B)/tests/mpi_test_%: tests/test_%.c $(wildcard tests/*.h) $(MPI_LIB_A)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -DPYPROC_E2E_MPI -Wno-unused-parameter -I. -o $@ $< \
		$(MPI_LIB_A) $(LDFLAGS) $(MPI_LIBS) $(CMOCKA_LIBS) -lpthread -ldl -lm

# The man pages pyproc-mpi(3) and pyproc-agent(1), made by the Makefile's
# rules; the link pages of the functions that pyproc-mpi(3) names go in a
# directory of their own (man/links.sh makes a directory's links anew).
MPI_MAN := $(B)/man/man3/pyproc-mpi.3 $(B)/man/man1/pyproc-agent.1
MPI_MAN_LINKS := $(B)/man/mpi/links.stamp
$(MPI_MAN_LINKS): man/pyproc-mpi.3.scd man/links.sh
	sh man/links.sh $(B)/man/mpi/man3 man/pyproc-mpi.3.scd
	@touch $@

ifdef PYPROC_DEPS_CHECKED
ifneq ($(MPI_LIBS),)
MPI_ALL := $(MPI_LIB_A) $(MPI_LIB_SO).0 $(AGENT) $(MPI_TEST) $(MPI_BENCH) $(MPI_E2E_TESTS)
all: $(MPI_ALL)
test-programs: $(MPI_ALL)
man: $(MPI_MAN) $(MPI_MAN_LINKS)

.PHONY: check-mpi install-mpi bench-mpi
check-mpi: $(MPI_ALL) $(WORKER)
	@echo "== MPI pools (tests/mpi.sh)"
	@timeout -k 5 900 sh tests/mpi.sh $(B) $(MPI_E2E_TESTS)
	@timeout -k 5 400 sh tests/mpi_netns.sh $(B)
check: check-mpi

# Prerequisites of bench, so measured before its other rows.
bench-mpi: $(MPI_ALL) $(WORKER)
	sh bench/mpi.sh $(B) | tee $(B)/bench/mpi.txt
bench: bench-mpi

install-mpi: $(MPI_ALL) $(MPI_MAN) $(MPI_MAN_LINKS)
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(PREFIX)/include $(DESTDIR)$(PREFIX)/bin \
		$(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3
	install -m 644 $(B)/man/man1/pyproc-agent.1 $(DESTDIR)$(MANDIR)/man1/
	install -m 644 $(B)/man/man3/pyproc-mpi.3 $(B)/man/mpi/man3/pyproc_*.3 $(DESTDIR)$(MANDIR)/man3/
	install -m 644 $(MPI_LIB_A) $(DESTDIR)$(LIBDIR)/libpyproc-mpi.a
	install -m 755 $(MPI_LIB_SO) $(DESTDIR)$(LIBDIR)/libpyproc-mpi.so.0
	ln -sf libpyproc-mpi.so.0 $(DESTDIR)$(LIBDIR)/libpyproc-mpi.so
	install -m 644 include/pyproc-mpi.h $(DESTDIR)$(PREFIX)/include/pyproc-mpi.h
	install -m 755 $(AGENT) $(DESTDIR)$(PREFIX)/bin/pyproc-agent
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' -e 's|@RPATH@|$(PC_RPATH)|' \
		-e 's|@VERSION@|$(shell sed -n 's/^#define PYPROC_VERSION_[A-Z]* \([0-9]*\)/\1/p' include/pyproc.h | paste -sd.)|' \
		mpi/pyproc-mpi.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/pyproc-mpi.pc
install: install-mpi
else
check: check-mpi-missing
bench: check-mpi-missing
.PHONY: check-mpi-missing
check-mpi-missing:
	@echo "== MPI pools and bench rows: SKIPPED, Open MPI is not installed (pkg-config ompi-c); make deps installs it"
endif
endif
