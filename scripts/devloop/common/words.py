"""The most frequent English words. A BPE tokenizer (Qwen, Llama, GPT) encodes each, with its
leading space, as one token, so a prompt of N of them is close to N tokens: `devloop bench` makes
its random prompts of them, and the generated models' tokenizer (engine.tinymodel) is trained on
them so that it behaves the same way."""

COMMON_WORDS_TEXT = (
    "the of and to in is was for on that with as by at from his her are be this had not but "
    "they have it one which you were all we when there can an their more if been has would who "
    "will so no out up into them some could time these two may first then do any like my now "
    "over such our man me even most made after also did many before must through back years "
    "where much your way well down should because each just those people how too little state "
    "good very make world still own see men work long get here between both life being under "
    "never day same another know while last might us great old year off come since against go "
    "came right used take three house use during without again place around however home small "
    "found thought went say part once general high upon school every far light water city true "
    "point number hand show side hold tree river sound word line open book paper green stone"
)
COMMON_WORDS = tuple(COMMON_WORDS_TEXT.split())
