# Builds and installs sftpsync with its man page and shell completions.
#
#   make                 release build (target/release/sftpsync)
#   sudo make install    to /usr/local, from that build; PREFIX=... and DESTDIR=... as usual
#   make uninstall
#
# The man page and completions are written by the installed binary itself
# (sftpsync --generate=man|bash|zsh|fish), from the same option table it parses with.

PREFIX ?= /usr/local
DESTDIR ?=
CARGO ?= cargo
BIN ?= target/release/sftpsync

BINDIR = $(DESTDIR)$(PREFIX)/bin
MANDIR = $(DESTDIR)$(PREFIX)/share/man/man1
BASHDIR = $(DESTDIR)$(PREFIX)/share/bash-completion/completions
ZSHDIR = $(DESTDIR)$(PREFIX)/share/zsh/site-functions
FISHDIR = $(DESTDIR)$(PREFIX)/share/fish/vendor_completions.d

.PHONY: all build install install-files uninstall test

all: build

build:
	$(CARGO) build --release --locked -p sftpsync

# `sudo make install` after `make` installs what was built, without running cargo as
# root; it builds only when there is nothing built yet.
$(BIN):
	$(CARGO) build --release --locked -p sftpsync

install: install-files

# The tests use this with BIN set to a debug build.
install-files: $(BIN)
	install -d $(BINDIR) $(MANDIR) $(BASHDIR) $(ZSHDIR) $(FISHDIR)
	install -m 755 $(BIN) $(BINDIR)/sftpsync
	$(BIN) --generate=man > $(MANDIR)/sftpsync.1
	$(BIN) --generate=bash > $(BASHDIR)/sftpsync
	$(BIN) --generate=zsh > $(ZSHDIR)/_sftpsync
	$(BIN) --generate=fish > $(FISHDIR)/sftpsync.fish

uninstall:
	rm -f $(BINDIR)/sftpsync $(MANDIR)/sftpsync.1 $(BASHDIR)/sftpsync \
		$(ZSHDIR)/_sftpsync $(FISHDIR)/sftpsync.fish

test:
	./scripts/test.sh
