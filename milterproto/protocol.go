// Package milterproto speaks the filter's side of the milter protocol
// (libmilter's, version 6, as Postfix's milter8 client speaks it): the
// option negotiation, the SMTP stages as packets, macros, a message's
// header changes and its final reply.
//
// Every packet is checked before it is parsed: a broken or hostile one
// ends that connection with a log line, never the daemon, and so does a
// handler's panic. A packet is parsed where it was read, without a copy;
// the replies and changes of a message go out in one write; socket
// deadlines are set again only when a good part of them has passed.
//
// It replaces github.com/d--j/go-milter's server, which spent about a
// third of the milter's CPU per message on copying each packet, setting
// and clearing deadlines around each read and write, building an x/text
// transformer chain for every header field added and writing each packet
// in two system calls; and which recovered no panic (one ended the
// daemon). go-milter's client stays the independent peer of our tests.
package milterproto

// Commands the MTA sends (libmilter's mfdef.h, SMFIC_*).
const (
	cmdAbort   = 'A'
	cmdBody    = 'B'
	cmdConnect = 'C'
	cmdMacro   = 'D'
	cmdEOM     = 'E'
	cmdHelo    = 'H'
	cmdQuitNC  = 'K' // quit, a new connection follows on this socket
	cmdHeader  = 'L'
	cmdMail    = 'M'
	cmdEOH     = 'N'
	cmdOptNeg  = 'O'
	cmdQuit    = 'Q'
	cmdRcpt    = 'R'
	cmdData    = 'T'
	cmdUnknown = 'U'
)

// Replies and changes the filter sends (SMFIR_*).
const (
	repAccept     = 'a'
	repContinue   = 'c'
	repTempFail   = 't'
	repReplyCode  = 'y'
	repInsHeader  = 'i'
	repChgHeader  = 'm'
	repQuarantine = 'q'
	repProgress   = 'p'
	repOptNeg     = 'O'
)

// Action is what the filter may do to a message (SMFIF_*).
type Action uint32

const (
	AddHeaders    Action = 0x01
	ChangeBody    Action = 0x02
	AddRcpt       Action = 0x04
	DeleteRcpt    Action = 0x08
	ChangeHeaders Action = 0x10
	Quarantine    Action = 0x20
	ChangeFrom    Action = 0x40
	AddRcptArgs   Action = 0x80
	SetMacros     Action = 0x100 // the MTA takes the macro lists we ask for
)

// Protocol is the steps the MTA leaves out and the replies it does not
// wait for (SMFIP_*).
type Protocol uint32

const (
	NoConnect     Protocol = 0x01
	NoHelo        Protocol = 0x02
	NoMail        Protocol = 0x04
	NoRcpt        Protocol = 0x08
	NoBody        Protocol = 0x10
	NoHeaders     Protocol = 0x20
	NoEOH         Protocol = 0x40
	NoHeaderReply Protocol = 0x80
	NoUnknown     Protocol = 0x100
	NoData        Protocol = 0x200
	NoConnReply   Protocol = 0x1000
	NoHeloReply   Protocol = 0x2000
	NoMailReply   Protocol = 0x4000
	NoRcptReply   Protocol = 0x8000
	NoDataReply   Protocol = 0x10000
	NoUnknownRepl Protocol = 0x20000
	NoEOHReply    Protocol = 0x40000
	NoBodyReply   Protocol = 0x80000
	// HeaderLeadingSpace: header values come, and go back, exactly as
	// they follow the colon, with their leading space.
	HeaderLeadingSpace Protocol = 0x100000
)

// optional is the part of Protocol a filter may ask for and do without:
// where the MTA does not offer to leave a reply out, we send continue.
const optional = NoHeaderReply | NoConnReply | NoHeloReply | NoMailReply | NoRcptReply | NoDataReply |
	NoUnknownRepl | NoEOHReply | NoBodyReply | NoUnknown | NoData

// noReply is the flag that spares the reply to a command.
func noReply(cmd byte) Protocol {
	switch cmd {
	case cmdConnect:
		return NoConnReply
	case cmdHelo:
		return NoHeloReply
	case cmdMail:
		return NoMailReply
	case cmdRcpt:
		return NoRcptReply
	case cmdData:
		return NoDataReply
	case cmdHeader:
		return NoHeaderReply
	case cmdEOH:
		return NoEOHReply
	case cmdBody:
		return NoBodyReply
	case cmdUnknown:
		return NoUnknownRepl
	}
	return 0
}

// Stage is where the MTA sends a macro list we ask for (SMFIM_*).
type Stage uint32

const (
	StageConnect Stage = 0
	StageHelo    Stage = 1
	StageMail    Stage = 2
	StageRcpt    Stage = 3
	StageData    Stage = 4
	StageEOM     Stage = 5
	StageEOH     Stage = 6
)

// Macro slots, in the order of the dialogue: a command clears the
// macros of the slots after its own, and the "other" slot (macros sent
// for a header, a body chunk, an unknown command) lasts one command.
const (
	slotConnect = iota
	slotHelo
	slotMail
	slotRcpt
	slotData
	slotEOH
	slotEOM
	slotOther
	numSlots
)

func slotOf(cmd byte) int {
	switch cmd {
	case cmdConnect:
		return slotConnect
	case cmdHelo:
		return slotHelo
	case cmdMail:
		return slotMail
	case cmdRcpt:
		return slotRcpt
	case cmdData:
		return slotData
	case cmdEOH:
		return slotEOH
	case cmdEOM:
		return slotEOM
	}
	return slotOther
}

// EndsCommand says whether data read from the MTA ends with a command
// it waits on our answer to: the end of the message (an 'E' packet
// without data, as Postfix sends it), the option negotiation, or quit.
// Our answer then carries the ACK (listener.AckUnless). The rest of a
// message comes without waiting for answers (we negotiate none), and
// is acknowledged at once. A body chunk that happens to end in the
// same bytes costs at most one delayed ACK.
func EndsCommand(read []byte) bool {
	n := len(read)
	switch {
	case n >= 5 && (string(read[n-5:]) == "\x00\x00\x00\x01E" || string(read[n-5:]) == "\x00\x00\x00\x01Q"):
		return true
	case n >= 17 && string(read[n-17:n-12]) == "\x00\x00\x00\x0dO":
		return true
	}
	return false
}
