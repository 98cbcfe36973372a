package contract

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/daca-go/daca/internal/apperr"
)

// Limits of what one app sends another. chat-service and the gateway check
// a message with the same CheckMessage, so both refuse the same input with
// the same code and words.
const (
	MaxText           = 16 << 10 // bytes of a message
	MaxTags           = 32       // tags of a message
	MaxTag            = 64       // bytes of a tag
	MaxIdempotencyKey = 255      // bytes of an idempotency key
	MaxBatch          = 100      // sessions in one POST /conversations/batch
	MaxName           = 200      // bytes of Profile.Name
	MaxStyle          = 64       // bytes of Profile.PreferredStyle
	MaxSummary        = 4096     // bytes of Profile.UserSummary
	ContextEntries    = 10       // recent history entries that reach the prompt
)

// IDPattern is what a user, session or chat-turn id must match: letters,
// digits and _.@:- , starting with a letter or digit, at most 128
// characters. State keys are built from ids, so nothing else (such as
// "a||b") is accepted.
const IDPattern = `^[A-Za-z0-9][A-Za-z0-9_.@:-]{0,127}$`

// ValidID reports whether s matches IDPattern (a loop over the bytes: every
// gateway request checks an id or two, and the regexp was a few µs each).
func ValidID(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '@' || c == ':' || c == '-'):
		default:
			return false
		}
	}
	return true
}

// CheckID returns an Invalid error naming field (as the caller's API spells
// it: user_id, userId) when id does not match IDPattern.
func CheckID(field, id string) error {
	if !ValidID(id) {
		return apperr.New(apperr.Invalid, "%s must match %s", field, IDPattern)
	}
	return nil
}

// CheckMessage checks a chat message: text not blank and at most MaxText
// bytes (TooLarge), at most MaxTags tags of at most MaxTag bytes.
func CheckMessage(text string, tags []string) error {
	if strings.TrimSpace(text) == "" {
		return apperr.New(apperr.Invalid, "Message text cannot be empty")
	}
	if len(text) > MaxText {
		return apperr.New(apperr.TooLarge, "Message text is longer than %d bytes", MaxText)
	}
	if len(tags) > MaxTags {
		return apperr.New(apperr.Invalid, "at most %d tags", MaxTags)
	}
	for _, t := range tags {
		if len(t) > MaxTag {
			return apperr.New(apperr.Invalid, "a tag is longer than %d bytes", MaxTag)
		}
	}
	return nil
}

// CheckIdempotencyKey checks a client's idempotency key: 1 to
// MaxIdempotencyKey bytes of valid UTF-8, printable characters only (it
// travels as an HTTP header).
func CheckIdempotencyKey(field, key string) error {
	if key == "" || len(key) > MaxIdempotencyKey || !utf8.ValidString(key) ||
		strings.IndexFunc(key, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return apperr.New(apperr.Invalid, "%s must be 1 to %d printable characters", field, MaxIdempotencyKey)
	}
	return nil
}
